"""`specaware predict CKPT SCENE --out MAP.tif`: full-scene sliding-window inference.

The windows, blending and writing are specaware/finetune/predict.py's; this module parses,
loads the checkpoint onto the device and reports.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="fine-tuned best.safetensors (with best.json beside)")
    parser.add_argument("scene", help="GeoTIFF / any GDAL raster to predict (t1 for change)")
    parser.add_argument("--out", required=True, help="output class map GeoTIFF")
    parser.add_argument("--scene2", help="second date for change checkpoints")
    parser.add_argument("--tile", type=int, default=0, help="window size (default: training tile)")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sensor", default="", help="sensor when the file has no wavelengths")
    parser.add_argument("--wavelength", default="", help="wavelength file when the file has none")
    parser.add_argument("--sensor2", default="")
    parser.add_argument("--wavelength2", default="")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    parser.add_argument("--probabilities", metavar="PROBS.tif", help="also write class "
                        "probabilities: a COG with one float16 band per class")
    parser.add_argument("--ignore-index", type=int, default=255, help="class-map value where the "
                        "scene has no valid band (default 255; -1 writes an int16 map)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: autocast on GPU (probabilities and argmax in fp32)")


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _preview_title(args, task: str) -> str:
    scenes = Path(args.scene).name + (f" vs {Path(args.scene2).name}" if args.scene2 else "")
    return f"{scenes}: {task}"


def main(args) -> int:
    from specaware.finetune import predict as lib
    from specaware.finetune.checkpoint import load_finetuned
    from specaware.finetune.lora import merge
    from specaware.sensors import UnknownSensorError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rasterio").setLevel(logging.WARNING)  # GDAL's echo of our own errors
    device = _device(args.device)
    model, meta = load_finetuned(args.checkpoint, map_location=str(device))
    merge(model)          # LoRA adapters folded into the weights: no extra matmul per window
    model.to(device).eval()
    try:
        infos = lib.open_scenes(meta, args.scene, args.scene2, args.sensor, args.wavelength,
                                args.sensor2, args.wavelength2)
    except (ValueError, UnknownSensorError) as err:   # metadata errors name the file and flag
        print(f"specaware predict: error: {err}", file=sys.stderr)
        return 2
    tile = args.tile or int(meta.get("data", {}).get("tile", 64))
    warnings = lib.range_warnings(infos)
    for w in warnings:
        log.warning("%s", w)
    probabilities = Path(args.probabilities) if args.probabilities else None
    # the map carries the warning wherever it is copied (tags written before the COG copy)
    out = lib.predict_scene(model, meta, infos, Path(args.out), tile, args.overlap,
                            args.batch_size, device, probabilities, args.ignore_index,
                            args.precision, {"SPECAWARE_WARNING": " | ".join(warnings)}
                            if warnings else None)
    if args.no_preview:
        print(f"wrote {out}")
    else:
        print(f"wrote {out} and {lib.save_preview(out, meta, _preview_title(args, meta['task']))}")
    return 0

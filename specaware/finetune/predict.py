"""`specaware predict CKPT SCENE --out MAP.tif`: full-scene sliding-window inference.

Windows of `tile` pixels overlap by `--overlap`; class probabilities are blended with a tent
weight (high in a window's centre, low at its edges, where context is missing), then the
argmax is written as a GeoTIFF with the input's CRS and transform (class index 0..K-1, nodata
where the input has no valid band), plus a PNG preview. The scene is processed in strips of
windows, so memory follows one strip, not the scene. Change checkpoints take `--scene2` (the
second date, on the same grid, any sensor). Pixel classifiers (trained on pixel patches)
classify a patch around every pixel.

Letters: K classes, t tile, H W scene size.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from specaware.finetune.checkpoint import load_finetuned
from specaware.finetune.datasets.collate import collate, to_device
from specaware.finetune.datasets.geotiff import RasterInfo
from specaware.finetune.datasets.protocol import tile_windows
from specaware.finetune.range_check import range_warning

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


def blend_weights(t: int) -> np.ndarray:
    """Tent weights [t, t]: 1 at the centre falling to 1/t at the border (never 0)."""
    ramp = np.minimum(np.arange(1, t + 1), np.arange(t, 0, -1)).astype(np.float32)
    ramp /= ramp.max()
    return np.outer(ramp, ramp)


class WindowPredictor:
    """Class probabilities [K, h, w] for windows of one (or two) rasters."""

    def __init__(self, model, meta: dict, infos: list[RasterInfo], device: torch.device):
        self.model, self.meta, self.infos, self.device = model, meta, infos, device
        self.task, self.k = meta["task"], meta["num_classes"]

    @torch.no_grad()
    def __call__(self, windows: list[tuple[int, int, int]], batch_size: int) -> list[np.ndarray]:
        if self.task == "classification":
            return [self._pixels(*w, batch_size) for w in windows]
        out = []
        for i in range(0, len(windows), batch_size):
            chunk = windows[i:i + batch_size]
            views = [collate([info.read(r, c, t, t) for r, c, t in chunk]) for info in self.infos]
            views = [to_device(v, self.device) for v in views]
            logits = self.model(*views)
            out += list(torch.softmax(logits.float(), 1).cpu().numpy())
        return out

    def _pixels(self, r: int, c: int, t: int, batch_size: int) -> np.ndarray:
        """Pixel classifier: one patch around every pixel of the window."""
        p = int(self.meta["data"].get("patch", 8))
        info = self.infos[0]
        H, W = info.shape
        lo, hi = p // 2, p - p // 2 - 1
        r0, c0 = max(r - lo, 0), max(c - lo, 0)
        r1, c1 = min(r + t + hi, H), min(c + t + hi, W)
        sample = info.read(r0, c0, r1 - r0, c1 - c0)
        pad = ((0, 0), (lo - (r - r0), (r + t + hi) - r1), (lo - (c - c0), (c + t + hi) - c1))
        image = np.pad(sample["image"], pad, mode="edge")
        probs = np.zeros((self.k, t * t), np.float32)
        coords = [(i, j) for i in range(t) for j in range(t)]
        for s in range(0, len(coords), batch_size * 16):
            part = coords[s:s + batch_size * 16]
            crops = [{**sample, "image": image[:, i:i + p, j:j + p],
                      "valid": np.ones((p, p), bool)} for i, j in part]
            batch = to_device(collate(crops), self.device)
            probs[:, s:s + len(part)] = torch.softmax(self.model(batch).float(), 1).cpu().numpy().T
        return probs.reshape(self.k, t, t)


def _open_output(path: Path, like: str, k: int):
    with rasterio.open(like) as src:
        profile = {"driver": "GTiff", "height": src.height, "width": src.width, "count": 1,
                   "crs": src.crs, "transform": src.transform, "compress": "deflate"}
    dtype, nodata = ("uint8", 255) if k < 255 else ("uint16", 65535)
    path.parent.mkdir(parents=True, exist_ok=True)
    return rasterio.open(path, "w", **profile, dtype=dtype, nodata=nodata), nodata


def predict_scene(model, meta: dict, infos: list[RasterInfo], out: Path, tile: int,
                  overlap: float, batch_size: int, device: torch.device) -> Path:
    """Sliding-window prediction of the whole scene into the GeoTIFF `out`; returns `out`."""
    H, W = infos[0].shape
    t = max(1, min(tile, H, W))
    stride = max(1, int(round(t * (1 - overlap))))
    rows = sorted({r for r, _ in tile_windows((H, W), t, stride)})
    cols = sorted({c for _, c in tile_windows((H, W), t, stride)})
    predictor, weight = WindowPredictor(model, meta, infos, device), blend_weights(t)
    k = meta["num_classes"]
    # blended sums only need an argmax, so they are never divided by the summed weights
    acc, valid = np.zeros((k, t, W), np.float32), np.zeros((t, W), bool)
    dst, nodata = _open_output(out, infos[0].path, k)
    start = 0
    with dst:
        def flush(n: int):  # rows [start, start + n) are final: write them, shift the buffers
            nonlocal start
            labels = acc[:, :n].argmax(0).astype(dst.dtypes[0])
            labels[~valid[:n]] = nodata
            dst.write(labels[None], window=Window(0, start, W, n))
            for buf in (acc, valid):
                buf[..., :t - n, :] = buf[..., n:, :].copy()
                buf[..., t - n:, :] = 0
            start += n
        for r in rows:
            if r > start:
                flush(r - start)
            probs = predictor([(r, c, t) for c in cols], batch_size)
            for c, p in zip(cols, probs):
                acc[:, :, c:c + t] += p * weight
                valid[:, c:c + t] |= _any_valid(infos[0], r, c, t)
        flush(H - start)
    return out


def _any_valid(info: RasterInfo, r: int, c: int, t: int) -> np.ndarray:
    with rasterio.open(info.path) as ds:
        data = ds.read(window=Window(c, r, t, t))
    ok = np.isfinite(data)
    if info.nodata is not None:
        ok &= data != info.nodata
    return ok.any(0)


def _preview_title(args, task: str) -> str:
    scenes = Path(args.scene).name + (f" vs {Path(args.scene2).name}" if args.scene2 else "")
    return f"{scenes}: {task}"


def main(args) -> int:
    from specaware.finetune.plots import save_map_png
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rasterio").setLevel(logging.WARNING)  # GDAL's echo of our own errors
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    model, meta = load_finetuned(args.checkpoint, map_location=str(device))
    model.to(device).eval()
    data = meta.get("data", {})
    infos = [RasterInfo.open(args.scene, args.sensor, args.wavelength,
                             normalization=data.get("normalization") or {"normalize": "none"})]
    if meta["task"] == "change":
        if not args.scene2:
            raise SystemExit("error: a change checkpoint needs --scene2 (the second date)")
        infos.append(RasterInfo.open(args.scene2, args.sensor2 or args.sensor,
                                     args.wavelength2 or args.wavelength,
                                     normalization=data.get("normalization_t2") or
                                     data.get("normalization") or {"normalize": "none"}))
        if infos[1].shape != infos[0].shape:
            raise SystemExit(f"error: {args.scene} {infos[0].shape} and {args.scene2} "
                             f"{infos[1].shape} "
                             "differ in size: resample both dates onto one grid first")
    tile = args.tile or int(data.get("tile", 64))
    warnings = [w for w in (range_warning(i.path, i.normalization) for i in infos) if w]
    for w in warnings:
        log.warning("%s", w)
    out = predict_scene(model, meta, infos, Path(args.out), tile, args.overlap,
                        args.batch_size, device)
    if warnings:                    # the map carries the warning wherever it is copied
        with rasterio.open(out, "r+") as ds:
            ds.update_tags(SPECAWARE_WARNING=" | ".join(warnings))
    if not args.no_preview:
        with rasterio.open(out) as ds:
            step = max(1, max(ds.height, ds.width) // 2048)
            labels = ds.read(1)[::step, ::step].astype(np.int64)
            labels[labels == ds.nodata] = -1
        save_map_png(labels, out.with_suffix(".png"), meta["num_classes"],
                     class_names=meta.get("class_names"),
                     title=_preview_title(args, meta["task"]))
    print(f"wrote {out}" + ("" if args.no_preview else f" and {out.with_suffix('.png')}"))
    return 0

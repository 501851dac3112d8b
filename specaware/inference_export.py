"""Inference export for a fixed band set: `torch.export` programs and ONNX graphs.

A deployed model sees one sensor, so the band set (wavelengths and FWHM in nm, GSD in m, sensor
name) is baked in as constants and the exported graph takes only the image [B, C, H, W]:
- a pretrained encoder exports as its backbone: image -> feature maps [B, D, H/p, W/p] at the
  backbone's `out_indices`;
- a fine-tuned model (`specaware finetune` BEST.safetensors) exports as image -> logits
  ([B, K] scene classes, or [B, K, H, W]); change detection takes (image_t1, image_t2).
Inputs are prepared exactly as for fine-tuning (the sidecar JSON repeats the checkpoint's
normalisation). Batch size, height and width stay free (H and W in multiples of the patch
size); a model whose code fixes one of them is exported at the example's shape, with a warning,
and the sidecar's `input.dynamic` says which.

Data-dependent branches of eager code (the all-finite fast path of model/inputs.py, the unit
check of model/units.py) take their branch-free form while tracing (specaware.model.tracing),
so the graph handles NaN pixels and the same inputs as eager. `export_inference` runs the
exported program (or ONNX Runtime, when installed) on the example and records the largest
difference to eager in the sidecar; it refuses to write a graph beyond `tolerance`.

Output files: OUT.pt2 (`torch.export.save`; load with `torch.export.load`) or OUT.onnx, and
OUT.json beside it: {"format": "specaware-inference/1", "kind", "input" (names, shape, dynamic),
"bands",
"outputs", "max_abs_diff", "normalization", "source"}.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from specaware.backbone import BandSet

log = logging.getLogger(__name__)

FORMAT = "specaware-inference/1"
FORMATS = {"torch-export": ".pt2", "onnx": ".onnx"}


class FixedBandHead(nn.Module):
    """A fine-tuned model (batch dict in) behind a fixed band set: image(s) -> logits."""

    def __init__(self, model: nn.Module, bands: BandSet, two_dates: bool = False):
        super().__init__()
        self.model, self.bands, self.two_dates = model, bands, two_dates

    def forward(self, image: Tensor, image_t2: Tensor | None = None) -> Tensor:
        if self.two_dates:
            return self.model(self.bands(image), self.bands(image_t2))
        return self.model(self.bands(image))


def _as_tuple(out) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, (list, tuple)) else (out,)


def max_abs_diff(a, b) -> float:
    a, b = _as_tuple(a), _as_tuple(b)
    if len(a) != len(b):
        raise RuntimeError(f"exported model returns {len(b)} outputs, eager {len(a)}")
    return max(float((x.float() - torch.as_tensor(y).float()).abs().max()) for x, y in zip(a, b))


def dynamic_shapes(module: nn.Module, example: tuple[Tensor, ...]) -> tuple[dict, ...]:
    """Batch free; height and width free in multiples of the patch size (one spec per input,
    the same for both dates of a change model)."""
    from torch.export import Dim
    encoder = getattr(module, "encoder", None) or module.model.encoder
    k = encoder.patch_size
    batch, h, w = Dim("batch", min=1, max=4096), Dim("h", min=1, max=1024), Dim("w", min=1,
                                                                                max=1024)
    return tuple({0: batch, 2: k * h, 3: k * w} for _ in example)


def export_program(module: nn.Module, example: tuple[Tensor, ...], dynamic: bool = True):
    """`torch.export` program of `module` (eval mode) for inputs shaped like `example`; with
    `dynamic`, batch, height and width stay free (see `dynamic_shapes`)."""
    shapes = dynamic_shapes(module, example) if dynamic else None
    return torch.export.export(module.eval(), example, dynamic_shapes=shapes, strict=False)


def run_onnx(path: Path, example: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
    """Outputs of the ONNX graph under ONNX Runtime, or None when onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outs = session.run(None, {n: t.numpy() for n, t in zip(names, example)})
    return tuple(torch.from_numpy(o) for o in outs)


def _write_onnx(module: nn.Module, example: tuple[Tensor, ...], path: Path, names: list[str],
                dynamic: bool):
    for chatty in ("onnx_ir", "onnxscript"):      # INFO lines per initializer otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    shapes = dynamic_shapes(module, example) if dynamic else None
    try:
        program = torch.onnx.export(module.eval(), example, dynamo=True, input_names=names,
                                    dynamic_shapes=shapes, external_data=False)
    except ImportError as e:
        raise RuntimeError(f"ONNX export needs onnx and onnxscript ({e}); install them with "
                           "pip install 'specaware[export]'") from e
    program.save(str(path))


def _run_file(out: Path, fmt: str, inputs: tuple[Tensor, ...]):
    if fmt == "torch-export":
        return torch.export.load(str(out)).module()(*inputs)
    return run_onnx(out, inputs)


def _probe(module: nn.Module, example: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inputs of another batch size, height and width than `example` (whole patches)."""
    encoder = getattr(module, "encoder", None) or module.model.encoder
    k = encoder.patch_size
    b, c, h, w = example[0].shape
    gen = torch.Generator().manual_seed(1)
    return tuple(torch.rand(b + 1, c, h + 2 * k, w + k, generator=gen) for _ in example)


def _write(module, example, out: Path, fmt: str, names: list[str], tolerance: float) -> bool:
    """Write the file with free batch/height/width when the graph then serves another shape
    as eager does, else with the example's shapes; returns whether the shapes are free."""
    probe = _probe(module, example)
    for dynamic in (True, False):
        try:
            if fmt == "torch-export":
                torch.export.save(export_program(module, example, dynamic), str(out))
            else:
                _write_onnx(module, example, out, names, dynamic)
            if dynamic:
                got = _run_file(out, fmt, probe)
                if got is not None and not max_abs_diff(module(*probe), got) <= tolerance:
                    raise RuntimeError(f"differs from eager at shape {list(probe[0].shape)}")
            return dynamic
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a specialised dim
            if not dynamic:
                raise
            log.warning("%s: free batch/height/width failed (%s: %s); exporting the example's "
                        "shape %s only", out.name, type(e).__name__,
                        str(e).splitlines()[0][:200], list(example[0].shape))
    return False


def export_inference(module: nn.Module, example: tuple[Tensor, ...], out: str | Path,
                     fmt: str, meta: dict, tolerance: float = 1e-4) -> tuple[Path, Path]:
    """Write OUT.pt2 or OUT.onnx (+ OUT.json) for `module` and check it against eager."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out).with_suffix(FORMATS[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    names = ["image", "image_t2"][:len(example)]
    with torch.no_grad():
        eager = module(*example)
        dynamic = _write(module, example, out, fmt, names, tolerance)
        got = _run_file(out, fmt, example)
    diff = None if got is None else max_abs_diff(eager, got)
    if diff is None:
        log.warning("onnxruntime is not installed: %s was written but not checked against "
                    "eager (pip install onnxruntime)", out)
    elif not diff <= tolerance:
        out.unlink(missing_ok=True)
        raise RuntimeError(f"exported {fmt} model differs from eager by {diff:.3g} "
                           f"(> tolerance {tolerance:g}); nothing was written")
    side = {"format": FORMAT, "kind": fmt, "file": out.name,
            "input": {"names": names, "shape": list(example[0].shape), "dtype": "float32",
                      "dynamic": ["batch", "height", "width"] if dynamic else []},
            "outputs": [list(t.shape) for t in _as_tuple(eager)], "max_abs_diff": diff,
            "tolerance": tolerance, **meta}
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(side, indent=1, default=float))
    log.info("exported %s (max |exported - eager| = %s) -> %s", fmt, diff, out)
    return out, meta_path


def bands_meta(bands: BandSet) -> dict:
    return {"wavelength_nm": bands.wavelength.tolist(), "fwhm_nm": bands.fwhm.tolist(),
            "gsd_m": float(bands.gsd[0]), "sensor": bands.sensor, "level": bands.level}


def inference_module(source: str | Path, band_args: dict) -> tuple[nn.Module, int, dict]:
    """(module taking image tensors, number of image inputs, sidecar meta) for a fine-tuned
    checkpoint (format specaware-finetune/1) or any pretrained source load_pretrained reads."""
    from specaware.backbone import resolve_bands
    from specaware.backbone_factory import create_backbone
    from specaware.finetune.checkpoint import FORMAT as FINETUNE_FORMAT
    path = Path(source)
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.is_file() and path.suffix in (
        ".safetensors", ".json") else {}
    if meta.get("format") == FINETUNE_FORMAT:
        from specaware.finetune.checkpoint import load_finetuned
        model, meta = load_finetuned(path)
        bands = BandSet(resolve_bands(band_args.get("wavelengths"), band_args.get("fwhm"),
                                      band_args.get("gsd"), band_args.get("sensor"),
                                      band_args.get("strict_units")),
                        band_args.get("sensor"), band_args.get("level", "L2"))
        two = meta["task"] == "change"
        info = {"task": meta["task"], "num_classes": meta["num_classes"],
                "class_names": meta.get("class_names"),
                "normalization": (meta.get("data") or {}).get("normalization"),
                "bands": bands_meta(bands), "source": str(path)}
        return FixedBandHead(model, bands, two), 2 if two else 1, info
    backbone = create_backbone(None, pretrained=str(path), **band_args)
    info = {"task": "features", "out_indices": backbone.out_indices,
            "bands": bands_meta(backbone.bands), "source": str(path)}
    return backbone, 1, info


def example_inputs(module: nn.Module, n_images: int, tile: int, batch: int = 2) -> tuple:
    """Random images [batch, C, tile, tile] for the module's band set (batch 2: torch.export
    would fix a batch dimension of 1)."""
    bands = module.bands
    if not bands.defined:
        raise ValueError("export needs a band set: pass --sensor NAME or --wavelengths FILE "
                         "(and --gsd)")
    gen = torch.Generator().manual_seed(0)
    c = bands.wavelength.shape[0]
    return tuple(torch.rand(batch, c, tile, tile, generator=gen) for _ in range(n_images))


# -- `specaware export --format ...` -------------------------------------------------------------
CLI_FORMATS = ("safetensors", "hub", "onnx", "torch-export")


def add_format_arguments(parser) -> None:
    """Options of `specaware export` for the hub and inference formats."""
    parser.add_argument("--format", default="safetensors", choices=CLI_FORMATS,
                        help="safetensors: OUT.safetensors + OUT.json from a checkpoint (default); "
                             "hub: a hub folder OUT/ (config.json, model.safetensors, README.md) "
                             "from a checkpoint or an export; onnx / torch-export: an inference "
                             "graph OUT.onnx / OUT.pt2 (+ OUT.json) for a fixed band set from an "
                             "export, a hub folder or a fine-tuned BEST.safetensors")
    parser.add_argument("--sensor", default=None, help="catalogue sensor of the band set")
    parser.add_argument("--wavelengths", default=None,
                        help="band centres: a file (JSON/CSV/text, optional FWHM column) or a "
                             "comma list, nm (µm converted)")
    parser.add_argument("--gsd", type=float, default=None, help="metres per pixel")
    parser.add_argument("--tile", type=int, default=64, help="example tile size in pixels")
    parser.add_argument("--out-indices", default=None,
                        help="comma list of blocks whose maps a backbone export returns")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |exported - eager| accepted")


def _band_args(args) -> dict:
    wl = fwhm = None
    if args.wavelengths:
        if Path(args.wavelengths).is_file():
            from specaware.finetune.datasets.wavelengths import read_table_file
            wl, fwhm = read_table_file(args.wavelengths)
            wl, fwhm = wl.tolist(), None if fwhm is None else fwhm.tolist()
        else:
            try:
                wl = [float(v) for v in args.wavelengths.split(",")]
            except ValueError as e:
                raise ValueError(f"--wavelengths {args.wavelengths!r} is neither a file nor a "
                                 "comma list of numbers") from e
    out = {"wavelengths": wl, "fwhm": fwhm, "gsd": args.gsd, "sensor": args.sensor}
    if args.out_indices:
        out["out_indices"] = [int(i) for i in args.out_indices.split(",")]
    return out


def run_format(args) -> int | None:
    """Run `specaware export` for --format hub/onnx/torch-export; None for safetensors (the
    checkpoint consolidation of specaware.export does that)."""
    fmt = getattr(args, "format", "safetensors")
    if fmt == "safetensors":
        return None
    if fmt == "hub":
        from specaware.hub import export_hub
        folder = export_hub(args.checkpoint, args.out, verify=not args.no_verify,
                            trust_pickle=getattr(args, "trust_pickle", False))
        print(f"wrote hub folder {folder} (config.json, model.safetensors, README.md)")
        return 0
    module, n_images, meta = inference_module(args.checkpoint, _band_args(args))
    example = example_inputs(module, n_images, args.tile)
    out, side = export_inference(module, example, args.out, fmt, meta, args.tolerance)
    diff = json.loads(side.read_text())["max_abs_diff"]
    print(f"wrote {out} and {side}; max |exported - eager| = "
          f"{'not checked' if diff is None else f'{diff:.3g}'}")
    return 0


__all__ = ["FixedBandHead", "export_inference", "export_program",
           "add_format_arguments", "run_format",
           "inference_module", "example_inputs", "max_abs_diff", "FORMATS"]

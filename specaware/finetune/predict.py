"""Full-scene sliding-window inference (`specaware predict`, specaware/cli/predict.py).

Windows of `tile` pixels overlap by `--overlap`; class probabilities are blended with a tent
weight (high in a window's centre, low at its edges, where context is missing), then the
argmax is written as a Cloud-Optimized GeoTIFF (data/cog.py: tiled, deflate, internal mode
overviews) with the input's CRS and transform (class index 0..K-1, `--ignore-index` where the
input has no valid band; 255 by default, -1 gives an int16 map), plus a PNG preview.
`--probabilities P.tif` also writes the blended class probabilities, one float16 band per class.
Each window is read once; its validity comes from the same read. The scene is processed in strips of
windows, so memory follows one strip, not the scene. Change checkpoints take `--scene2` (the
second date, on the same grid, any sensor). Pixel classifiers (trained on pixel patches)
classify a patch around every pixel.

Letters: K classes, t tile, H W scene size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
import torch

from specaware.data.remote import open_raster
from specaware.data.cog import CogWriter
from specaware.data.band_metadata import BandKeys
from specaware.data.collate import collate, to_device
from specaware.data.reader import RasterReader
from specaware.finetune.datasets.protocol import tile_windows
from specaware.finetune.range_check import range_warning
from specaware.finetune.precision import autocast

log = logging.getLogger(__name__)
# how `specaware predict` takes a sensor / wavelength file, named in metadata errors
KEYS = BandKeys("--sensor", "--wavelength")
KEYS_T2 = BandKeys("--sensor2", "--wavelength2")


def blend_weights(t: int) -> np.ndarray:
    """Tent weights [t, t]: 1 at the centre falling to 1/t at the border (never 0)."""
    ramp = np.minimum(np.arange(1, t + 1), np.arange(t, 0, -1)).astype(np.float32)
    ramp /= ramp.max()
    return np.outer(ramp, ramp)


def _any_valid(sample: dict) -> np.ndarray:
    """[h, w] True where the window holds at least one valid band (from the read itself)."""
    valid = sample["valid"]
    return valid.any(0) if valid.ndim == 3 else valid


class WindowPredictor:
    """Class probabilities [K, h, w] and validity [h, w] for windows of one (or two) rasters;
    each window is read once, and its validity comes from that read."""

    def __init__(self, model, meta: dict, infos: list[RasterReader], device: torch.device,
                 precision: str = "fp32"):
        self.model, self.meta, self.infos, self.device = model, meta, infos, device
        self.task, self.k, self.precision = meta["task"], meta["num_classes"], precision

    @torch.no_grad()
    def __call__(self, windows: list[tuple[int, int, int]],
                 batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.task == "classification":
            return [self._pixels(*w, batch_size) for w in windows]
        out = []
        for i in range(0, len(windows), batch_size):
            chunk = windows[i:i + batch_size]
            reads = [[info.read(r, c, t, t) for r, c, t in chunk] for info in self.infos]
            valid = [np.logical_and.reduce([_any_valid(date[j]) for date in reads])
                     for j in range(len(chunk))]     # change: both dates must hold data
            views = [to_device(collate(date), self.device) for date in reads]
            with autocast(self.precision, self.device):
                logits = self.model(*views)
            probs = torch.softmax(logits.float(), 1).cpu().numpy()
            out += list(zip(probs, valid))
        return out

    def _pixels(self, r: int, c: int, t: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel classifier: one patch around every pixel of the window (read once, with the
        patch margin)."""
        p = int(self.meta["data"].get("patch", 8))
        info = self.infos[0]
        H, W = info.shape
        lo, hi = p // 2, p - p // 2 - 1
        r0, c0 = max(r - lo, 0), max(c - lo, 0)
        r1, c1 = min(r + t + hi, H), min(c + t + hi, W)
        sample = info.read(r0, c0, r1 - r0, c1 - c0)
        valid = _any_valid(sample)[r - r0:r - r0 + t, c - c0:c - c0 + t]
        pad = ((0, 0), (lo - (r - r0), (r + t + hi) - r1), (lo - (c - c0), (c + t + hi) - c1))
        image = np.pad(sample["image"], pad, mode="edge")
        probs = np.zeros((self.k, t * t), np.float32)
        coords = [(i, j) for i in range(t) for j in range(t)]
        for s in range(0, len(coords), batch_size * 16):
            part = coords[s:s + batch_size * 16]
            crops = [{**sample, "image": image[:, i:i + p, j:j + p],
                      "valid": np.ones((p, p), bool)} for i, j in part]
            batch = to_device(collate(crops), self.device)
            with autocast(self.precision, self.device):
                logits = self.model(batch)
            probs[:, s:s + len(part)] = torch.softmax(logits.float(), 1).cpu().numpy().T
        return probs.reshape(self.k, t, t), valid


def class_map_dtype(num_classes: int, ignore_index: int) -> str:
    """Smallest GeoTIFF type holding 0..K-1 and `ignore_index`; the latter may not be a class."""
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} is a class index (classes are "
                         f"0..{num_classes - 1}): use 255, 65535 or -1")
    if ignore_index < 0:
        if ignore_index < -32768 or num_classes > 32767:
            raise ValueError(f"ignore_index={ignore_index} with {num_classes} classes does not "
                             "fit int16: use -1")
        return "int16"
    top = max(num_classes - 1, ignore_index)
    if top > 65535:
        raise ValueError(f"ignore_index={ignore_index} does not fit uint16: use 65535 or -1")
    return "uint8" if top <= 255 else "uint16"


@dataclass
class Outputs:
    """The class map (always) and the optional probability raster, both COGs."""
    classes: Path
    probabilities: Path | None = None
    ignore_index: int = 255


def _writers(outputs: Outputs, like: str, meta: dict, tags: dict):
    k = meta["num_classes"]
    with open_raster(like) as src:
        profile = {"height": src.height, "width": src.width, "crs": src.crs,
                   "transform": src.transform}
    dtype = class_map_dtype(k, outputs.ignore_index)
    classes = CogWriter(outputs.classes, profile, 1, dtype, outputs.ignore_index, "classes",
                        ["class index"], tags)
    if outputs.probabilities is None:
        return classes, None
    names = meta.get("class_names") or [f"class_{i}" for i in range(k)]
    probs = CogWriter(outputs.probabilities, profile, k, "float16", float("nan"), "continuous",
                      [f"p({n})" for n in names], tags)
    return classes, probs


def predict_scene(model, meta: dict, infos: list[RasterReader], out: Path, tile: int,
                  overlap: float, batch_size: int, device: torch.device,
                  probabilities: Path | None = None, ignore_index: int = 255,
                  precision: str = "fp32", tags: dict | None = None) -> Path:
    """Sliding-window prediction of the whole scene; returns `out`.

    Writes `out`, a class-map COG (class index 0..K-1, `ignore_index` where no date holds a
    valid band), and, given `probabilities`, a COG of K float16 bands: the blended softmax of
    each class (NaN where invalid). Memory holds one strip of windows, never the scene.
    `tags` are written into both files' metadata.
    """
    H, W = infos[0].shape
    t = max(1, min(tile, H, W))
    stride = max(1, int(round(t * (1 - overlap))))
    rows = sorted({r for r, _ in tile_windows((H, W), t, stride)})
    cols = sorted({c for _, c in tile_windows((H, W), t, stride)})
    predictor = WindowPredictor(model, meta, infos, device, precision)
    strip = _Strip(meta["num_classes"], t, W, blend_weights(t))
    writers = _writers(Outputs(Path(out), probabilities, ignore_index), infos[0].path, meta,
                       tags or {})
    try:
        for r in rows:
            if r > strip.start:
                strip.flush(r - strip.start, writers, ignore_index)
            for c, (p, valid) in zip(cols, predictor([(r, c, t) for c in cols], batch_size)):
                strip.add(p, valid, c)
        strip.flush(H - strip.start, writers, ignore_index)
    except BaseException:
        for w in writers:
            if w is not None:
                w.abort()
        raise
    for w in writers:
        if w is not None:
            w.close()
    return Path(out)


class _Strip:
    """Blended probabilities of the rows [start, start + t) still receiving windows."""

    def __init__(self, k: int, t: int, width: int, weight: np.ndarray):
        self.t, self.weight, self.start = t, weight, 0
        self.acc = np.zeros((k, t, width), np.float32)        # sum of weight * p
        self.wsum = np.zeros((t, width), np.float32)          # sum of weight
        self.valid = np.zeros((t, width), bool)

    def add(self, probs: np.ndarray, valid: np.ndarray, col: int) -> None:
        t = self.t
        self.acc[:, :, col:col + t] += probs * self.weight
        self.wsum[:, col:col + t] += self.weight
        self.valid[:, col:col + t] |= valid

    def flush(self, n: int, writers, ignore_index: int) -> None:
        """Rows [start, start + n) are final: write them and shift the buffers up by n."""
        classes, probs = writers
        labels = self.acc[:, :n].argmax(0).astype(np.int64)
        labels[~self.valid[:n]] = ignore_index
        classes.write(labels[None], self.start, 0)
        if probs is not None:
            p = self.acc[:, :n] / np.maximum(self.wsum[:n], 1e-12)
            p[:, ~self.valid[:n]] = np.nan
            probs.write(p.astype(np.float16), self.start, 0)
        t = self.t
        for buf in (self.acc, self.wsum, self.valid):
            buf[..., :t - n, :] = buf[..., n:, :].copy()
            buf[..., t - n:, :] = 0
        self.start += n


def open_scenes(meta: dict, scene: str, scene2: str | None = None, sensor: str = "",
                wavelength: str = "", sensor2: str = "", wavelength2: str = ""
                ) -> list[RasterReader]:
    """RasterReader of the scene (and of the second date for change checkpoints), normalised as
    the checkpoint's training data was. Raises ValueError when a change checkpoint lacks the
    second date or the two dates differ in size."""
    data = meta.get("data", {})
    infos = [RasterReader.open(scene, sensor, wavelength, keys=KEYS,
                               normalization=data.get("normalization") or {"normalize": "none"})]
    if meta["task"] != "change":
        return infos
    if not scene2:
        raise ValueError("a change checkpoint needs --scene2 (the second date)")
    infos.append(RasterReader.open(scene2, sensor2 or sensor, wavelength2 or wavelength,
                                   keys=KEYS_T2, normalization=data.get("normalization_t2") or
                                   data.get("normalization") or {"normalize": "none"}))
    if infos[1].shape != infos[0].shape:
        raise ValueError(f"{scene} {infos[0].shape} and {scene2} {infos[1].shape} differ in "
                         "size: resample both dates onto one grid first")
    return infos


def range_warnings(infos: list[RasterReader]) -> list[str]:
    """One line per scene whose values are far outside the checkpoint's range (range_check)."""
    return [w for w in (range_warning(i) for i in infos) if w]


def save_preview(out: Path, meta: dict, title: str) -> Path:
    """PNG of the class map `out` (at most ~2048 px a side) beside it; returns its path."""
    from specaware.render import save_map_png
    with rasterio.open(out) as ds:
        step = max(1, max(ds.height, ds.width) // 2048)
        # decimated read: served from the COG's overviews, never the whole band
        labels = ds.read(1, out_shape=(max(1, ds.height // step), max(1, ds.width // step)),
                         resampling=Resampling.nearest).astype(np.int64)
        labels[labels == ds.nodata] = -1
    png = out.with_suffix(".png")
    save_map_png(labels, png, meta["num_classes"], class_names=meta.get("class_names"),
                 title=title)
    return png

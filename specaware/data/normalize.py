"""Pixel normalisation: per sample for pretraining, per scene for fine-tuning and prediction.

Pretraining (`normalize_sample`, applied after the views and before collation), modes (`NormalizeConfig.mode`):
- "none": values as stored (L2 reflectance is already ~0..1, the model's natural range);
- "affine": `x * scale + offset`, then optional clipping, e.g. to bring scaled L1 radiance into
  a reflectance-like range; one rule for every band, so no band table is needed;
- "per_sample": each band standardised by its own mean / std over the sample's valid pixels
  (the statistics go to `meta["norm"]` [C] so a reconstruction can be mapped back).
Invalid pixels stay exactly 0 in every mode (the contract: downstream code never sees garbage
where `valid` is False).

Fine-tuning and prediction (`fit_scene` / `apply_scene`, used by data/reader.py and the .mat
benchmarks): statistics fitted once per scene (auto / minmax / standard / none), stored in the
fine-tuned checkpoint, and replayed on every window at prediction time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

MODES = ("none", "affine", "per_sample")


@dataclass
class NormalizeConfig:
    mode: Literal["none", "affine", "per_sample"] = "none"
    scale: float = 1.0               # affine: multiply by this
    offset: float = 0.0              # affine: then add this
    clip: list[float] = field(default_factory=list)  # [low, high] after affine; [] = no clip
    eps: float = 1e-4                # per_sample: floor on the std (flat bands)

    def is_identity(self) -> bool:
        """True when normalising changes nothing (the loader then skips the pass entirely)."""
        return self.mode == "none" or (
            self.mode == "affine" and self.scale == 1.0 and self.offset == 0.0 and not self.clip)


def _affine(image: np.ndarray, valid: np.ndarray, cfg: NormalizeConfig) -> np.ndarray:
    out = image * np.float32(cfg.scale) + np.float32(cfg.offset)
    if cfg.clip:
        if len(cfg.clip) != 2 or cfg.clip[0] >= cfg.clip[1]:
            raise ValueError(f"normalize.clip must be [low, high] with low < high, got {cfg.clip}")
        np.clip(out, cfg.clip[0], cfg.clip[1], out=out)
    return out


def _per_sample(image: np.ndarray, valid: np.ndarray, cfg: NormalizeConfig):
    """Standardise each band over its valid pixels. image, valid [C, H, W] -> image, (mean, std)."""
    weight = valid.astype(np.float32)
    count = weight.sum(axis=(1, 2))
    safe = np.maximum(count, 1.0)
    mean = (image * weight).sum(axis=(1, 2)) / safe
    var = (((image - mean[:, None, None]) ** 2) * weight).sum(axis=(1, 2)) / safe
    std = np.maximum(np.sqrt(var), np.float32(cfg.eps))
    out = (image - mean[:, None, None]) / std[:, None, None]
    return out.astype(np.float32), (mean.astype(np.float32), std.astype(np.float32))


def normalize_view(view: dict[str, Any], cfg: NormalizeConfig) -> dict[str, Any]:
    """Normalise one view (a sample or a `target` dict with image [C, H, W] and valid)."""
    if cfg.mode not in MODES:
        raise ValueError(f"normalize.mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.is_identity():
        return view
    image = np.asarray(view["image"], dtype=np.float32)
    valid = np.broadcast_to(np.asarray(view["valid"], dtype=bool), image.shape)
    out = dict(view)
    if cfg.mode == "affine":
        image = _affine(image, valid, cfg)
    else:
        image, (mean, std) = _per_sample(image, valid, cfg)
        out["norm"] = {"mean": mean, "std": std}
    out["image"] = np.where(valid, image, np.float32(0))
    return out


def normalize_sample(sample: dict[str, Any], cfg: NormalizeConfig) -> dict[str, Any]:
    """Normalise the input view and, if present, the `target` view with the same rule.

    per_sample statistics land in `meta["norm"]` (input) and `meta["target_norm"]` (target).
    """
    if cfg.is_identity():
        return sample
    out = normalize_view(sample, cfg)
    meta = dict(out.get("meta", {}))
    if "norm" in out:
        meta["norm"] = out.pop("norm")
    if sample.get("target") is not None:
        target = normalize_view(sample["target"], cfg)
        if "norm" in target:
            meta["target_norm"] = target.pop("norm")
        out["target"] = target
    out["meta"] = meta
    return out


# --- per scene (fine-tuning, prediction) -------------------------------------------------

def fit_scene(image: np.ndarray, mode: str, name: str = "") -> dict:
    """Statistics to bring a cube (or a decimated read of it) to the model's value range.

    `auto`: a cube whose 99.9th percentile exceeds 1.5 (integer-scaled reflectance such as the
    0..10000 of the .mat benchmarks) is divided by the power of ten above that percentile;
    `minmax`: global min/max to 0..1; `standard`: per-band zero mean, unit std; `none`.
    `range` is the [0.1, 99.9] percentile span of the cube after normalisation: what the model
    saw, against which prediction checks a new scene (specaware/finetune/range_check.py).
    The returned dict travels in fine-tuned checkpoints so prediction replays it exactly.
    """
    how = _fit_scene(image, mode, name)
    seen = apply_scene(image, how)
    seen = seen[np.isfinite(seen)]
    if seen.size:
        how["range"] = [float(v) for v in np.percentile(seen, [0.1, 99.9])]
    return how


def _fit_scene(image: np.ndarray, mode: str, name: str) -> dict:
    if mode == "none":
        return {"normalize": "none"}
    if mode == "auto":
        p = float(np.nanpercentile(image, 99.9)) if image.size else 0.0
        scale = 1.0 if p <= 1.5 else float(10.0 ** -np.ceil(np.log10(p)))
        return {"normalize": "auto", "scale": scale}
    if mode == "minmax":
        return {"normalize": "minmax", "min": float(np.nanmin(image)),
                "max": float(np.nanmax(image))}
    if mode == "standard":
        return {"normalize": "standard",
                "mean": np.nanmean(image, axis=(1, 2)).astype(float).tolist(),
                "std": np.nanstd(image, axis=(1, 2)).astype(float).tolist()}
    raise ValueError(f"{name}: normalize={mode!r} is not one of auto, none, minmax, standard")


def apply_scene(image: np.ndarray, how: dict) -> np.ndarray:
    """Replay `fit_scene` statistics on a cube or a window [C, h, w]."""
    image = image.astype(np.float32, copy=False)
    mode = how.get("normalize", "none")
    if mode == "auto":
        return image * np.float32(how["scale"])
    if mode == "minmax":
        return (image - how["min"]) / max(how["max"] - how["min"], 1e-12)
    if mode == "standard":
        mean = np.asarray(how["mean"], np.float32)[:, None, None]
        std = np.asarray(how["std"], np.float32)[:, None, None]
        if len(mean) != image.shape[0]:
            raise ValueError(f"standard normalisation was fitted on {len(mean)} bands, the image "
                             f"has {image.shape[0]}")
        return (image - mean) / np.maximum(std, 1e-6)
    return image


def normalize_scene(image: np.ndarray, mode: str, name: str = "") -> tuple[np.ndarray, dict]:
    """Fit and apply in one go: returns the cube and the statistics used."""
    how = fit_scene(image, mode, name)
    return apply_scene(image, how), how

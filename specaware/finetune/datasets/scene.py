"""In-memory scenes used by the benchmark adapters: one image cube with its band metadata, and
the labelled / two-date wrappers around it. Units: wavelength and FWHM in nm, GSD in metres.

Label convention inside the code: -1 = unlabelled (ignored by losses and metrics), 0..K-1 =
classes; for change detection 0 = no change and 1..K-1 = change (one class when binary).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)
IGNORE = -1


@dataclass
class HSIScene:
    """image float32 [C, H, W]; wavelength/fwhm float32 [C] (nm); gsd in metres."""
    image: np.ndarray
    wavelength: np.ndarray
    fwhm: np.ndarray
    gsd: float
    sensor: str = "unknown"
    level: str = "L2"
    name: str = ""
    approximate_wavelengths: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        c = self.image.shape[0]
        if self.image.ndim != 3:
            raise ValueError(f"{self.name}: image must be [C, H, W], got {self.image.shape}")
        for key in ("wavelength", "fwhm"):
            n = len(getattr(self, key))
            if n != c:
                raise ValueError(f"{self.name}: {n} {key} values for {c} bands; give one per band")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])

    def sample(self, image: np.ndarray, valid: np.ndarray | None = None, **extra) -> dict:
        """A sample dict of the data contract for a crop `image` [C, h, w] of this scene."""
        if valid is None:
            valid = np.isfinite(image)
        return {"image": np.nan_to_num(image).astype(np.float32), "valid": valid,
                "wavelength": self.wavelength, "fwhm": self.fwhm, "gsd": float(self.gsd),
                "sensor": self.sensor, "level": self.level,
                "meta": {"scene": self.name, **extra}}


@dataclass
class LabelledScene:
    """A scene with a per-pixel label map int64 [H, W] (-1 = unlabelled). A benchmark with a
    fixed split keeps its training map in `labels` and its test map in `test_labels`."""
    scene: HSIScene
    labels: np.ndarray
    class_names: list[str]
    test_labels: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ChangeScene:
    """Two co-registered dates (bands may differ) and a change map int64 [H, W]."""
    t1: HSIScene
    t2: HSIScene
    labels: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def fit_normalization(image: np.ndarray, mode: str, name: str = "") -> dict:
    """Statistics to bring a cube (or a decimated read of it) to the model's value range.

    `auto`: a cube whose 99.9th percentile exceeds 1.5 (integer-scaled reflectance such as the
    0..10000 of the .mat benchmarks) is divided by the power of ten above that percentile;
    `minmax`: global min/max to 0..1; `standard`: per-band zero mean, unit std; `none`.
    `range` is the [0.1, 99.9] percentile span of the cube after normalisation: what the model
    saw, against which prediction checks a new scene (specaware/finetune/range_check.py).
    The returned dict travels in fine-tuned checkpoints so prediction replays it exactly.
    """
    how = _fit(image, mode, name)
    seen = apply_normalization(image, how)
    seen = seen[np.isfinite(seen)]
    if seen.size:
        how["range"] = [float(v) for v in np.percentile(seen, [0.1, 99.9])]
    return how


def _fit(image: np.ndarray, mode: str, name: str) -> dict:
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


def apply_normalization(image: np.ndarray, how: dict) -> np.ndarray:
    """Replay `fit_normalization` statistics on a cube or a window [C, h, w]."""
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


def normalize(image: np.ndarray, mode: str, name: str = "") -> tuple[np.ndarray, dict]:
    """Fit and apply in one go: returns the cube and the statistics used."""
    how = fit_normalization(image, mode, name)
    return apply_normalization(image, how), how

"""In-memory scenes used by the benchmark adapters: one image cube with its band metadata, and
the labelled / two-date wrappers around it. Units: wavelength and FWHM in nm, GSD in metres.

Label convention inside the code: -1 = unlabelled (ignored by losses and metrics), 0..K-1 =
classes; for change detection 0 = no change and 1..K-1 = change (one class when binary).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

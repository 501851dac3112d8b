"""Is a scene's value range one the fine-tuned model has seen? (`specaware predict`)

A scene stored in other units than the training data (DN instead of reflectance, a wrong
scale factor, a corrupted band at 1e30) still predicts, but every pixel lands in one class
without a word. Before predicting, a decimated read of the scene is normalised the way the
checkpoint says and its [0.1, 99.9] percentile span compared with the span the model saw
(`normalization["range"]`, recorded when the checkpoint was trained; older checkpoints fall
back to the span their normalisation mode produces on reflectance). A span reaching more than
FAR spans beyond, or squeezed below 1/FAR**3 of it (a scale factor applied twice), is "far
outside": predict warns and writes the warning into the output's metadata.
"""
from __future__ import annotations

import numpy as np

from specaware.data.normalize import apply_scene
from specaware.data.reader import RasterReader, read_decimated

FAR = 10.0
DECIMATED = 256            # pixels per side of the read
DEFAULT_RANGE = {"none": (0.0, 1.0), "auto": (0.0, 1.0), "minmax": (0.0, 1.0),
                 "standard": (-3.0, 3.0)}


def scene_range(reader: RasterReader) -> tuple[float, float] | None:
    """[0.1, 99.9] percentiles of the scene's valid pixels after the reader's normalisation
    (decimated read, data/reader.read_decimated), or None when no pixel is valid."""
    with np.errstate(all="ignore"):
        values = apply_scene(read_decimated(reader.scene, DECIMATED), reader.normalization)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    low, high = np.percentile(values.astype(np.float64), [0.1, 99.9])
    return float(low), float(high)


def expected_range(normalization: dict) -> tuple[float, float]:
    seen = normalization.get("range")
    if isinstance(seen, (list, tuple)) and len(seen) == 2:
        return float(seen[0]), float(seen[1])
    return DEFAULT_RANGE.get(normalization.get("normalize", "none"), (0.0, 1.0))


def range_warning(reader: RasterReader) -> str | None:
    """A one-line warning when the reader's scene is far outside the checkpoint's range (its
    `normalization`, as stored in the checkpoint), else None."""
    path, normalization = reader.path, reader.normalization or {"normalize": "none"}
    got = scene_range(reader)
    lo, hi = expected_range(normalization)
    span = max(hi - lo, 1e-12)
    if got is None:
        return f"{path}: no valid pixel in a decimated read; the prediction is nodata or guesswork"
    far = got[0] < lo - FAR * span or got[1] > hi + FAR * span
    squeezed = (got[1] - got[0]) < span / FAR ** 3
    if not (far or squeezed):
        return None
    return (f"{path}: values after the checkpoint's normalisation span {got[0]:.3g}..{got[1]:.3g}, "
            f"far outside the {lo:.3g}..{hi:.3g} the model was trained on; predictions are "
            "likely meaningless. Check the scene's units or scale factor (reflectance vs DN)")

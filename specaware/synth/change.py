"""A second date of a scene with known land-cover changes, and the change masks.

Letters: k classes, t transitions, h rows, x columns.

Changes are blobs (smooth random fields above a threshold, hundreds of metres across). Inside the
blob of transition (from -> to), the abundance of `from` moves to `to`: a forest blob turns its
forest into bare soil and leaves the river that crosses it alone. The blob edge is soft, so
changed pixels at its border are mixed, as in real imagery.
Besides the real changes, the second date differs by nuisance only (sun angle: global brightness
and shading; sensor noise; nodata), which a change detector must learn to ignore.

Change masks per pixel (uint8, 255 = nodata in either date):
- binary: 1 where the dominant class differs between the dates;
- from->to: 0 no change, i + 1 for TRANSITIONS[i], len(TRANSITIONS) + 1 for any other
  (e.g. a mixed border pixel whose dominant class flipped between two unchanged classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specaware.synth.scene import Fields, PixelGrid, random_fields
from specaware.synth.spectra import CLASSES

IGNORE = 255

#: Land-cover transitions of the second date: (from, to) class names.
TRANSITIONS: tuple[tuple[str, str], ...] = (
    ("forest", "bare_soil"),        # logging
    ("forest", "burned"),           # wildfire
    ("grassland", "built"),         # urbanisation
    ("grassland", "bare_soil"),     # ploughing
    ("water", "grassland"),         # a drying lake shore
    ("bare_soil", "grassland"),     # crop emergence
    ("dry_vegetation", "burned"),   # grass fire
)


def transition_names() -> list[str]:
    """Names of the from->to mask values, index = mask value."""
    return ["no_change", *[f"{a}->{b}" for a, b in TRANSITIONS], "other_change"]


@dataclass(frozen=True)
class ChangePlan:
    """Where each transition happens: one field per transition, changed where field > threshold.

    threshold 1.2 on a unit-variance field leaves roughly 11% of the area per transition (of the
    source class only, so a scene changes by ~5-15% overall): enough changed pixels for a change
    detector to learn from a few labelled tiles, as in the common benchmarks.
    """
    fields: Fields
    threshold: float = 1.2
    softness: float = 0.15
    brightness: float = 1.0   # global illumination factor of the second date

    def weights(self, xs: np.ndarray) -> np.ndarray:
        """Change weight [t, h, x] in 0..1 on a square grid with coordinates xs (m)."""
        field = self.fields.on_grid(xs, -xs)
        return 1 / (1 + np.exp(-(field - self.threshold) / self.softness))


def make_change_plan(rng: np.random.Generator, min_m: float = 60.0,
                     max_m: float = 4000.0) -> ChangePlan:
    """Blobs at every scale from ~60 m (fields, houses) to kilometres (fires), so a 5 m and a
    60 m sensor both see changes."""
    return ChangePlan(fields=random_fields(rng, len(TRANSITIONS), min_m=min_m, max_m=max_m,
                                           roughness=0.5),
                      brightness=float(rng.uniform(0.9, 1.1)))


def apply_change(plan: ChangePlan, fine: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """Second-date class abundances on the sub-pixel grid [k, h*ss, x*ss] (sum to 1 kept)."""
    weights = plan.weights(grid.coords(subpixels=True))
    out = fine.copy()
    for (src, dst), w in zip(TRANSITIONS, weights):
        a, b = CLASSES.index(src), CLASSES.index(dst)
        moved = w * out[a]
        out[a] -= moved
        out[b] += moved
    return out


def change_masks(labels_1: np.ndarray, labels_2: np.ndarray,
                 nodata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary and from->to change masks, uint8 [h, x], from two label maps and a nodata mask."""
    changed = labels_1 != labels_2
    binary = changed.astype(np.uint8)
    fromto = np.where(changed, len(TRANSITIONS) + 1, 0).astype(np.uint8)
    for i, (src, dst) in enumerate(TRANSITIONS):
        hit = (labels_1 == CLASSES.index(src)) & (labels_2 == CLASSES.index(dst))
        fromto[hit] = i + 1
    binary[nodata] = IGNORE
    fromto[nodata] = IGNORE
    return binary, fromto

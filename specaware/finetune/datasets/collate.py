"""Samples -> a batch of INTERFACES.md "A batch": bands padded to the widest sample with a
`band_mask`, never truncated; labels stacked; two-date samples collate each date separately.
"""
from __future__ import annotations

import numpy as np
import torch


def _tensor(x, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.to(dtype) if dtype is not None else t


def collate_views(samples: list[dict]) -> dict:
    """List of sample dicts (image [C, H, W], valid [C, H, W] or [H, W], ...) -> batch dict."""
    b = len(samples)
    c = max(int(s["image"].shape[0]) for s in samples)
    h, w = samples[0]["image"].shape[-2:]
    image = torch.zeros(b, c, h, w)
    valid = torch.zeros(b, c, h, w, dtype=torch.bool)
    band_mask = torch.zeros(b, c, dtype=torch.bool)
    wavelength, fwhm = torch.zeros(b, c), torch.zeros(b, c)
    for i, s in enumerate(samples):
        ci = int(s["image"].shape[0])
        if tuple(s["image"].shape[-2:]) != (h, w):
            raise ValueError(f"sample {i} is {tuple(s['image'].shape[-2:])}, batch is {(h, w)}: "
                             "crop samples to one size before batching")
        image[i, :ci] = _tensor(s["image"], torch.float32)
        v = _tensor(s.get("valid", np.ones(s["image"].shape, bool)), torch.bool)
        valid[i, :ci] = v if v.dim() == 3 else v.expand(ci, h, w)
        band_mask[i, :ci] = True
        wavelength[i, :ci] = _tensor(s["wavelength"], torch.float32)
        fwhm[i, :ci] = _tensor(s["fwhm"], torch.float32)
    return {"image": image, "valid": valid, "band_mask": band_mask, "wavelength": wavelength,
            "fwhm": fwhm, "gsd": torch.tensor([float(s["gsd"]) for s in samples]),
            "sensor": [s.get("sensor", "unknown") for s in samples],
            "level": [s.get("level", "L2") for s in samples],
            "meta": [s.get("meta", {}) for s in samples]}


def collate(samples: list[dict]) -> dict:
    """Single-date samples -> batch (+ `label`); two-date samples {"t1", "t2", "label"} ->
    {"t1": batch, "t2": batch, "label": ...}."""
    if "t1" in samples[0]:
        out = {"t1": collate_views([s["t1"] for s in samples]),
               "t2": collate_views([s["t2"] for s in samples])}
    else:
        out = collate_views(samples)
    if "label" in samples[0]:
        out["label"] = torch.stack([_tensor(s["label"], torch.long) for s in samples])
    return out


def to_device(batch, device):
    """Move every tensor in a (nested) batch to `device`; lists of strings stay as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch

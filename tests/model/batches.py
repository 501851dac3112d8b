"""Tiny batches of the INTERFACES.md kind for the model tests (generated, no data files).

`sample()` makes one tile with smooth spectra (so spectral angles mean something) and spatial
structure; `pad_batch()` pads samples along the band axis with a band_mask, as collate does.
"""
from __future__ import annotations

import math

import torch


def sample(bands: int, size: int = 16, seed: int = 0, wl_range=(400.0, 2500.0),
           sensor: str = "aviris-ng", level: str = "L2", gsd: float = 5.0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    wavelength = torch.linspace(*wl_range, bands) + torch.rand(bands, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size),
                            indexing="ij")
    fields = []
    for _ in range(3):
        f = torch.rand(3, generator=gen) * torch.tensor([3.0, 3.0, 6.3]) + 0.5
        fields.append(torch.exp(2 * torch.sin(2 * math.pi * (f[0] * xx + f[1] * yy) + f[2])))
    abundance = torch.stack(fields) / torch.stack(fields).sum(0)          # [3, H, W]
    wl = wavelength / 1000.0
    spectra = torch.stack([0.05 * torch.exp(-((wl - 0.5) / 0.12) ** 2) + 0.01,
                           0.05 + 0.4 * torch.sigmoid((wl - 0.715) / 0.012) * torch.exp(-wl / 2),
                           0.1 + 0.3 * (1 - torch.exp(-(wl - 0.35) / 0.7))])   # [3, C]
    image = torch.einsum("kc,khw->chw", spectra, abundance)
    image = image + 0.003 * torch.randn(image.shape, generator=gen)
    return {"image": image.float(), "valid": torch.ones(bands, size, size, dtype=torch.bool),
            "wavelength": wavelength.float(), "fwhm": torch.full((bands,), 8.0) +
            torch.rand(bands, generator=gen), "gsd": gsd, "sensor": sensor, "level": level}


def pad_batch(samples: list[dict], bands: int | None = None) -> dict:
    """Stack samples, padding bands at the end to `bands` (default: the largest count)."""
    c_max = bands or max(s["image"].shape[0] for s in samples)
    out = {"image": [], "valid": [], "band_mask": [], "wavelength": [], "fwhm": []}
    for s in samples:
        c, h, w = s["image"].shape
        pad = c_max - c
        out["image"].append(torch.cat([s["image"], torch.zeros(pad, h, w)]))
        out["valid"].append(torch.cat([s["valid"], torch.zeros(pad, h, w, dtype=torch.bool)]))
        out["band_mask"].append(torch.arange(c_max) < c)
        out["wavelength"].append(torch.cat([s["wavelength"], torch.zeros(pad)]))
        out["fwhm"].append(torch.cat([s["fwhm"], torch.zeros(pad)]))
    batch = {k: torch.stack(v) for k, v in out.items()}
    batch["gsd"] = torch.tensor([float(s["gsd"]) for s in samples])
    batch["sensor"] = [s["sensor"] for s in samples]
    batch["level"] = [s["level"] for s in samples]
    return batch


def permute_bands(s: dict, order: torch.Tensor) -> dict:
    """The same sample with its bands (pixels AND metadata) stored in another order."""
    out = dict(s)
    for key in ("image", "valid", "wavelength", "fwhm"):
        out[key] = s[key][order]
    return out

"""From the batch dict of INTERFACES.md to the tensors the model works on.

Checks what a user can get wrong (shapes, missing keys, tiles not divisible by the patch size)
and says which key is wrong and how to fix it. Non-finite pixel values are zeroed and marked
invalid here, so nothing downstream sees a NaN. Band centres given in micrometres are converted
to nm or refused (specaware.model.units). While a graph is traced for export, the eager fast
paths that branch on pixel values are skipped for their general, branch-free form.

Letters: b batch, c bands, n patches, p patch pixels (k*k).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from specaware.model.conditioning import Vocabulary
from specaware.model.masking import patchify
from specaware.model.tracing import is_tracing
from specaware.model.units import to_nanometres

REQUIRED_KEYS = ("image", "wavelength", "fwhm", "gsd")


@dataclass
class BandInputs:
    """One view of a batch, patchified band-major."""
    patches: Tensor      # float [b, c, n, p]; 0 at invalid pixels and padded bands
    valid: Tensor        # bool  [b, c, n, p]; False at invalid pixels and padded bands
    band_mask: Tensor    # bool  [b, c]
    present: Tensor      # bool  [b, c]; real band with at least one valid pixel in the view
    wavelength: Tensor   # float [b, c] nm
    fwhm: Tensor         # float [b, c] nm
    gsd: Tensor          # float [b] m
    sensor: Tensor       # long  [b] vocabulary rows
    level: Tensor        # long  [b]
    grid: tuple[int, int]  # (H/k, W/k)

    @property
    def num_patches(self) -> int:
        return self.patches.shape[2]


def _per_sample(value, b: int, c: int | None, key: str, device) -> Tensor:
    """Tensor/list/scalar -> float [b, c] (or [b] when c is None), broadcasting shared values."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    want = (b,) if c is None else (b, c)
    if t.ndim < len(want) and t.shape == want[len(want) - t.ndim:]:
        t = t.expand(want)           # one value shared by the batch (e.g. a scalar gsd)
    if tuple(t.shape) != want:
        raise ValueError(f"batch['{key}'] has shape {tuple(t.shape)}, expected {want} "
                         f"(one value per {'sample' if c is None else 'sample and band'})")
    return t


def _names(value, b: int, key: str) -> list[str]:
    if value is None:
        return ["unknown"] * b
    if isinstance(value, str):
        return [value] * b
    names = list(value)
    if len(names) != b:
        raise ValueError(f"batch['{key}'] has {len(names)} names for a batch of {b}")
    return names


def _vocabulary_rows(vocab: Vocabulary, value, b: int, key: str, device) -> Tensor:
    """long [b]: one name (or None) shared by the batch is looked up once and expanded, so an
    exported graph keeps its batch size free; a list gives one row per sample."""
    if value is None or isinstance(value, str):
        return vocab.lookup([value or "unknown"], device).expand(b)
    return vocab.lookup(_names(value, b, key), device)


def _valid_mask(batch: dict, image: Tensor, band_mask: Tensor) -> tuple[Tensor, bool]:
    """bool [b, c, H, W]: given valid ([b,c,H,W] or [b,H,W]) & finite & real band, and whether
    every pixel is valid (so the image needs no zeroing)."""
    valid = batch.get("valid")
    if valid is not None:
        valid = torch.as_tensor(valid, device=image.device).bool()
        if valid.ndim == 3:
            valid = repeat(valid, "b h w -> b c h w", c=image.shape[1])
        if valid.shape != image.shape:
            raise ValueError(f"batch['valid'] has shape {tuple(valid.shape)}; expected "
                             f"{tuple(image.shape)} ([B, C, H, W]) or [B, H, W]")
    if image.device.type == "cpu" and not is_tracing() and _all_finite(image):
        # fast path: on the CPU each pass over the pixels costs more than these checks
        if valid is None:
            valid = torch.ones_like(image, dtype=torch.bool)
        if not band_mask.all():
            valid = valid & rearrange(band_mask, "b c -> b c 1 1")
        return valid, bool(valid.all())
    if valid is None:
        valid = torch.ones_like(image, dtype=torch.bool)
    return valid & torch.isfinite(image) & rearrange(band_mask, "b c -> b c 1 1"), False


def _all_finite(image: Tensor) -> bool:
    """True when no pixel is NaN or infinite: one reduction instead of an elementwise mask (a sum
    of finite values is finite unless it overflows, which just takes the slow path)."""
    return bool(torch.isfinite(image.sum()))


def prepare_inputs(batch: dict, patch_size: int, sensors: Vocabulary,
                   levels: Vocabulary, strict_units: bool | None = None) -> BandInputs:
    """Validate one view (the batch itself or batch['target']) and patchify it.

    strict_units: refuse micrometre wavelengths instead of converting them (None: the
    SPECAWARE_STRICT_UNITS environment variable decides; see specaware.model.units)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"the encoder takes a batch dict (image, wavelength nm, fwhm nm, gsd m; "
                        f"docs/INTERFACES.md), got {type(batch).__name__}; for image tensors "
                        "build a backbone: specaware.create_model(name, features_only=True, "
                        "wavelengths=[nm], gsd=m) or sensor=NAME")
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; the model needs image, wavelength (nm), "
                       f"fwhm (nm) and gsd (m) for every sample (see docs/INTERFACES.md)")
    image = torch.as_tensor(batch["image"])
    if image.ndim != 4:
        raise ValueError(f"batch['image'] must be [B, C, H, W], got shape {tuple(image.shape)}")
    b, c, h, w = image.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"batch['image'] is {h}x{w} pixels, not a multiple of the patch size "
                         f"{patch_size}; crop or pad tiles to a multiple of {patch_size}")
    device = image.device
    band_mask = batch.get("band_mask")
    band_mask = (torch.ones(b, c, dtype=torch.bool, device=device) if band_mask is None
                 else torch.as_tensor(band_mask, device=device).bool())
    if band_mask.shape != (b, c):
        raise ValueError(f"batch['band_mask'] has shape {tuple(band_mask.shape)}, "
                         f"expected {(b, c)}")
    valid, all_valid = _valid_mask(batch, image, band_mask)
    present = band_mask
    if not all_valid:
        image = torch.where(valid, image, torch.zeros((), dtype=image.dtype, device=device))
        present = band_mask & valid.any(dim=3).any(dim=2)
    wavelength, fwhm = to_nanometres(_per_sample(batch["wavelength"], b, c, "wavelength", device),
                                     _per_sample(batch["fwhm"], b, c, "fwhm", device), band_mask,
                                     "batch['wavelength']", strict_units)
    return BandInputs(
        patches=patchify(image, patch_size), valid=patchify(valid, patch_size),
        band_mask=band_mask, present=present,
        wavelength=wavelength * band_mask, fwhm=fwhm * band_mask,
        gsd=_per_sample(batch["gsd"], b, None, "gsd", device),
        sensor=_vocabulary_rows(sensors, batch.get("sensor"), b, "sensor", device),
        level=_vocabulary_rows(levels, batch.get("level"), b, "level", device),
        grid=(h // patch_size, w // patch_size))

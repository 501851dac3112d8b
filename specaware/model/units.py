"""Wavelength units where band metadata enters the model: nanometres inside, micrometres caught.

Inside specaware every wavelength and FWHM is in nm (docs/INTERFACES.md, "Units"). TorchGeo
datasets and DOFA give band centres in µm, so a user following their convention would feed
centres 1000x too small, and the spectral conditioning would read them as far-ultraviolet bands
without any error. No optical sensor has a band centre below 30 nm, and none has one beyond
30 µm, so centres whose real bands all lie below `MICROMETRE_LIMIT` can only be micrometres.

Policy (docs/INTERFACES.md "Wavelength units"):
- default: such centres (and the FWHM given with them, in the same unit) are multiplied by 1000,
  with one logged warning per key and process;
- strict: they are refused with `WavelengthUnitError`. Turn it on per model
  (`create_model(..., strict_units=True)`, which sets `encoder.strict_units`) or for the process
  with `SPECAWARE_STRICT_UNITS=1`.
While a graph is being traced for export (or shapes are checked on meta tensors) the check
cannot branch on tensor values, so the conversion is written as `torch.where` (same result, no
refusal, no log).

Letters: b batch, c bands.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import Tensor

from specaware.model.tracing import is_tracing
from specaware.units import MICROMETRE_LIMIT

log = logging.getLogger(__name__)

_noted: set[str] = set()


class WavelengthUnitError(ValueError):
    """Centres that can only be micrometres, refused under the strict unit policy."""


def strict_from_env() -> bool:
    return os.environ.get("SPECAWARE_STRICT_UNITS", "").strip().lower() in ("1", "true", "yes")


def micrometre_factor(wavelength: Tensor, band_mask: Tensor) -> Tensor:
    """float [b, 1]: 1000 for samples whose real band centres are all below the limit, else 1.
    wavelength float [b, c]; band_mask bool [b, c]; padded bands are ignored."""
    peak = torch.where(band_mask, wavelength, torch.zeros_like(wavelength)).amax(dim=1,
                                                                                 keepdim=True)
    has_bands = band_mask.any(dim=1, keepdim=True)
    micro = (peak < MICROMETRE_LIMIT) & has_bands
    return torch.where(micro, torch.full_like(peak, 1000.0), torch.ones_like(peak))


def to_nanometres(wavelength: Tensor, fwhm: Tensor, band_mask: Tensor, key: str = "wavelength",
                  strict: bool | None = None) -> tuple[Tensor, Tensor]:
    """(wavelength, fwhm) [b, c] in nm: samples given in µm are converted (or refused if strict).

    `key` names where the values came from in messages (e.g. "batch['wavelength']")."""
    factor = micrometre_factor(wavelength, band_mask)
    if is_tracing() or wavelength.device.type == "meta":   # no values to branch on
        return wavelength * factor, fwhm * factor
    micro = factor.squeeze(1) > 1
    if not bool(micro.any()):
        return wavelength, fwhm
    strict = strict_from_env() if strict is None else strict
    rows = micro.nonzero().flatten().tolist()
    peak = float(wavelength[micro].max())
    if strict:
        raise WavelengthUnitError(
            f"{key}: band centres of samples {rows[:8]} are all below {MICROMETRE_LIMIT:g} "
            f"(largest {peak:g}), so they are micrometres; specaware takes nanometres. Multiply "
            "wavelength and fwhm by 1000 (or turn off strict units to have them converted)")
    if key not in _noted:
        _noted.add(key)
        log.warning("%s: band centres up to %g can only be micrometres; converted to nm (x1000), "
                    "FWHM too. Pass nanometres to silence this, or strict_units=True to refuse",
                    key, peak)
    return wavelength * factor, fwhm * factor

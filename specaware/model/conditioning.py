"""Meta-content aware band conditioning (SpecAware, arXiv 2510.27219; docs/DESIGN.md section 2).

One condition vector per band and sample, z [b, c, dz], from
  1. meta: Fourier features of the wavelength + an MLP of log FWHM + sensor/level embeddings
     (tables with an `unknown` row, so new sensors still run);
  2. content: per-band statistics of the VISIBLE patches only (masked patches never leak in);
  3. a fusion MLP, then one pre-norm transformer layer across the band axis, with padded bands
     masked out of attention, so each band's condition knows its spectral neighbours.
No positional encoding along bands: the layer is permutation-equivariant, which is what makes
tokens invariant to the order bands are stored in.

Letters: b batch, c bands, n patches, p patch pixels (k*k), f Fourier pairs, m statistics,
dz condition width.
"""
from __future__ import annotations

import logging
import math

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from specaware.model.block import Block
from specaware.model.config import ConditioningConfig

log = logging.getLogger(__name__)

NUM_CONTENT_STATS = 4          # relative mean, relative std, log brightness, valid fraction
WAVELENGTH_SPAN_NM = (350.0, 2550.0)


class Vocabulary:
    """Name -> row of an embedding table; anything not listed maps to the `unknown` row.

    Each unknown name is logged once per vocabulary, so a new sensor is visible in the logs
    without flooding them.
    """

    UNKNOWN = "unknown"

    def __init__(self, names: list[str], canonicalise=None):
        self.names = [n.lower() for n in names] + [self.UNKNOWN]
        self._index = {n: i for i, n in enumerate(self.names)}
        self._canonicalise = canonicalise
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name) -> int:
        key = str(name).strip().lower()
        if key not in self._index and self._canonicalise is not None:
            key = self._canonicalise(key)
        if key in self._index:
            return self._index[key]
        if key not in self._warned:
            self._warned.add(key)
            log.warning("name %r is not in the model vocabulary %s; using 'unknown'",
                        name, self.names[:-1])
        return self._index[self.UNKNOWN]

    def lookup(self, names, device) -> Tensor:
        """list[str] [b] -> LongTensor [b] of table rows."""
        return torch.tensor([self.index(n) for n in names], dtype=torch.long, device=device)


def sensor_alias(name: str) -> str:
    """Resolve aliases ("AVIRIS_NG", "S2A"...) through the sensor catalogue when it is there."""
    try:
        from specaware.sensors import get_sensor
        return get_sensor(name).name.lower()
    except Exception:       # catalogue missing or name unknown there too: caller maps to unknown
        return name


def band_statistics(x: Tensor, valid: Tensor, band_mask: Tensor,
                    zeroed: bool = False) -> dict[str, Tensor]:
    """Per-sample, per-band statistics over the given (visible) patches and valid pixels only.

    x, valid: [b, c, n, p] (pixels of the visible patches; valid False at invalid/padded);
    band_mask: bool [b, c]; zeroed: x is already 0 wherever valid is False (as
    `BandInputs.patches` are), which saves a pass. Returns mean, std [b, c] (units of x),
    valid_frac [b, c], brightness [b] (mean |band mean| over the real bands with a valid pixel,
    units of x: a band lost to absorption counts like padding, not as a dark band).
    """
    # `where` and `count_nonzero` read the bool mask as it is (a product or a sum would first
    # copy it to a float/int tensor as large as x)
    count = torch.count_nonzero(valid, dim=(2, 3)).to(x.dtype)
    if not zeroed:
        x = torch.where(valid, x, 0.0)
    mean = reduce(x, "b c n p -> b c", "sum") / count.clamp_min(1.0)
    centred = torch.where(valid, x - rearrange(mean, "b c -> b c 1 1"), 0.0)
    var = torch.linalg.vector_norm(centred, dim=(2, 3)).square() / count.clamp_min(1.0)
    real = (band_mask & (count > 0)).to(x.dtype)
    brightness = (mean.abs() * real).sum(1) / real.sum(1).clamp_min(1.0)
    return {"mean": mean, "std": var.sqrt(), "valid_frac": count / (x.shape[2] * x.shape[3]),
            "brightness": brightness}


def band_scale(stats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Band mean and std as [b, c, 1, 1]; the std is floored at 1% of the sample's brightness,
    so a flat or all-zero band maps to 0 instead of amplifying float noise (never / 0)."""
    floor = rearrange(0.01 * stats["brightness"] + 1e-6, "b -> b 1")
    std = torch.maximum(stats["std"], floor)
    return rearrange(stats["mean"], "b c -> b c 1 1"), rearrange(std, "b c -> b c 1 1")


def standardise(x: Tensor, valid: Tensor, stats: dict[str, Tensor]) -> Tensor:
    """(x - band mean) / band std, 0 at invalid pixels; x, valid [b, c, n, p]."""
    mean, std = band_scale(stats)
    scale = 1.0 / std
    return torch.where(valid, torch.addcmul(-mean * scale, x, scale), 0.0)   # two passes


def content_features(stats: dict[str, Tensor]) -> Tensor:
    """Scale-free content descriptors [b, c, m] from `band_statistics` output.

    Relative mean/std (spectral shape, independent of L1 radiance vs L2 reflectance scaling),
    the log of the overall brightness (which scale the sample lives in) and the valid fraction.
    """
    scale = rearrange(stats["brightness"].clamp_min(1e-4), "b -> b 1")
    log_brightness = torch.log(scale).expand_as(stats["mean"])
    feats = [stats["mean"] / scale, stats["std"] / scale, log_brightness, stats["valid_frac"]]
    return torch.stack(feats, dim=-1)


def fourier_periods(cfg: ConditioningConfig) -> Tensor:
    """Log-spaced periods [f] in nm from `min_period_nm` to `max_period_nm`."""
    return torch.logspace(math.log10(cfg.min_period_nm), math.log10(cfg.max_period_nm),
                          cfg.fourier_features)


class BandConditioning(nn.Module):
    """(wavelength, fwhm, sensor, level, content) of every band -> z [b, c, dz].

    With `use_content=False` (the output head's conditioning of the target view, whose pixels
    the model must not see) a learned vector stands in for the content features.
    """

    def __init__(self, cfg: ConditioningConfig, num_sensors: int, num_levels: int,
                 use_content: bool = True):
        super().__init__()
        dz = cfg.cond_dim
        self.use_content = use_content
        self.register_buffer("periods", fourier_periods(cfg), persistent=False)
        self.wavelength_mlp = nn.Sequential(
            nn.Linear(2 * cfg.fourier_features + 1, dz), nn.GELU(), nn.Linear(dz, dz))
        self.fwhm_mlp = nn.Sequential(nn.Linear(1, dz // 2), nn.GELU(), nn.Linear(dz // 2, dz))
        self.sensor_table = nn.Embedding(num_sensors, dz)
        self.level_table = nn.Embedding(num_levels, dz)
        if use_content:
            self.content_mlp = nn.Sequential(
                nn.Linear(NUM_CONTENT_STATS, dz), nn.GELU(), nn.Linear(dz, dz))
        else:
            self.no_content = nn.Parameter(torch.zeros(dz))
        self.fuse = nn.Sequential(nn.LayerNorm(2 * dz), nn.Linear(2 * dz, dz), nn.GELU(),
                                  nn.Linear(dz, dz))
        self.band_layer = Block(dz, cfg.heads, mlp_ratio=2.0)
        self.norm = nn.LayerNorm(dz)
        nn.init.normal_(self.sensor_table.weight, std=0.02)
        nn.init.normal_(self.level_table.weight, std=0.02)

    def meta(self, wavelength: Tensor, fwhm: Tensor, sensor: Tensor, level: Tensor) -> Tensor:
        """wavelength, fwhm [b, c] nm; sensor, level [b] rows -> meta features [b, c, dz]."""
        # phases in float32 whatever the weights are: bf16 cannot resolve 2*pi*2500/10 rad
        wavelength, fwhm = wavelength.float(), fwhm.float()
        dtype = self.fuse[1].weight.dtype
        phase = 2 * math.pi * rearrange(wavelength, "b c -> b c 1") / self.periods
        lo, hi = WAVELENGTH_SPAN_NM
        linear = rearrange((wavelength - lo) / (hi - lo), "b c -> b c 1")
        wl = self.wavelength_mlp(torch.cat([phase.sin(), phase.cos(), linear], -1).to(dtype))
        # log FWHM: widths span 5 nm (imaging spectrometers) to ~200 nm (broad MSI bands).
        log_fwhm = rearrange(torch.log(fwhm.clamp_min(0.1)), "b c -> b c 1")
        fw = self.fwhm_mlp(log_fwhm.to(dtype))
        ids = rearrange(self.sensor_table(sensor) + self.level_table(level), "b dz -> b 1 dz")
        return wl + fw + ids

    def forward(self, wavelength: Tensor, fwhm: Tensor, sensor: Tensor, level: Tensor,
                band_mask: Tensor, content: Tensor | None = None) -> Tensor:
        """All [b, c] (sensor/level [b]); content [b, c, m] or None -> z [b, c, dz].

        Padded bands (band_mask False) are excluded from attention; their z is zeroed.
        """
        meta = self.meta(wavelength, fwhm, sensor, level)
        if self.use_content:
            if content is None:
                raise ValueError("BandConditioning(use_content=True) needs content features")
            cont = self.content_mlp(content.to(self.fuse[1].weight.dtype))
        else:
            cont = self.no_content.expand_as(meta)
        z = self.fuse(torch.cat([meta, cont], dim=-1))
        z, _ = self.band_layer(z, mask=band_mask)
        z = self.norm(z)
        return z * rearrange(band_mask, "b c -> b c 1").to(z.dtype)

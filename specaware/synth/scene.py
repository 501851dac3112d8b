"""The ground of a synthetic scene: land-cover abundance maps with spatial structure.

Letters: k classes, m endmembers per class, j = k*m endmembers, f fields, w plane waves,
h rows, x columns (of one sensor's pixel grid).

The ground is continuous, in metres, so every sensor images the same ground at its own GSD:
- one random field per class, a sum of plane waves with log-spaced wavelengths (tens of metres to
  kilometres) and a power-law amplitude, so there is structure at every scale (landscapes are
  roughly fractal); a softmax over the class fields with a low temperature gives regions that are
  pure inside and mixed along their borders;
- within a class, m library spectra are mixed by smoother fields (texture: soil moisture,
  canopy density...), plus a small per-pixel abundance jitter;
- an illumination field (topographic shading) scales the whole spectrum.
A pixel of GSD g integrates the ground over its footprint: the class abundances are computed on
an `ss x ss` sub-pixel grid and averaged, so coarse sensors see more mixed pixels.
Plane waves are separable in x and y, so a field on a grid is one complex matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from einops import rearrange, reduce

from specaware.synth.spectra import CLASSES, SpectralLibrary


@dataclass(frozen=True)
class Fields:
    """f random fields of w plane waves each: wavenumbers (rad/m), amplitudes and phases [f, w]."""
    kx: np.ndarray
    ky: np.ndarray
    amp: np.ndarray
    phase: np.ndarray

    def on_grid(self, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        """Field values [f, h, x] at column coordinates x_m [x] and row coordinates y_m [h] (m).

        sum_w amp cos(ky y + phase + kx x) = Re(sum_w a_w(y) b_w(x)), one real batched matmul.
        """
        ang_y = self.ky[:, :, None] * y_m[None, None] + self.phase[:, :, None]   # [f, w, h]
        ang_x = self.kx[:, :, None] * x_m[None, None]                            # [f, w, x]
        amp = self.amp[:, :, None]
        rows = np.concatenate([amp * np.cos(ang_y), -amp * np.sin(ang_y)], axis=1)
        cols = np.concatenate([np.cos(ang_x), np.sin(ang_x)], axis=1)
        rows = rearrange(rows, "f w h -> f h w").astype(np.float32)
        return np.matmul(rows, cols.astype(np.float32))


def random_fields(rng: np.random.Generator, count: int, *, min_m: float, max_m: float,
                  waves: int = 48, roughness: float = 0.25) -> Fields:
    """`count` fields with unit variance and wavelengths log-uniform in [min_m, max_m] metres.

    roughness: a wave's amplitude grows as wavelength**(1 - roughness); 0 = smooth (the large
    scales dominate), 1 = every scale equally strong (rough, salt-and-pepper-like).
    """
    length = np.exp(rng.uniform(np.log(min_m), np.log(max_m), (count, waves)))
    angle = rng.uniform(0, 2 * np.pi, (count, waves))
    k = 2 * np.pi / length
    amp = length ** (1.0 - roughness)
    amp = amp / np.sqrt((amp ** 2).sum(axis=1, keepdims=True) / 2)  # unit variance
    return Fields(kx=k * np.cos(angle), ky=k * np.sin(angle), amp=amp,
                  phase=rng.uniform(0, 2 * np.pi, (count, waves)))


@dataclass(frozen=True)
class GroundConfig:
    """Knobs of the ground model (all lengths in metres)."""
    region_min_m: float = 60.0      # shortest wavelength of the class fields
    region_max_m: float = 12000.0   # longest
    roughness: float = 0.3
    border_temperature: float = 0.025 # softmax temperature of the class fields: lower = sharper
    endmembers_per_class: int = 4
    texture_min_m: float = 30.0
    texture_max_m: float = 2000.0
    texture_temperature: float = 0.5
    illumination_strength: float = 0.08   # std of the multiplicative shading
    abundance_jitter: float = 0.05        # per-pixel log-normal jitter of endmember abundances
    absent_classes: tuple[str, ...] = ("burned",)  # only appear through changes


@dataclass(frozen=True)
class Ground:
    """One scene's ground: fields, class priors and the chosen endmember spectra.

    endmembers: float32 [k, m, L] reflectance on the library grid; bias: [k] class log-priors.
    """
    config: GroundConfig
    class_fields: Fields
    texture_fields: Fields
    shade_field: Fields
    bias: np.ndarray
    endmembers: np.ndarray
    endmember_names: tuple[tuple[str, ...], ...]


def make_ground(rng: np.random.Generator, library: SpectralLibrary,
                config: GroundConfig = GroundConfig()) -> Ground:
    """Draw a ground: class fields, per-scene class priors and m library spectra per class."""
    k, m = len(CLASSES), config.endmembers_per_class
    bias = rng.normal(0.0, 0.35, k)
    for name in config.absent_classes:
        bias[CLASSES.index(name)] = -np.inf
    endmembers, names = [], []
    for cls in CLASSES:
        idx = library.of_class(cls)
        pick = rng.choice(idx, size=m, replace=len(idx) < m)
        endmembers.append(library.spectra[pick])
        names.append(tuple(library.names[i] for i in pick))
    return Ground(
        config=config,
        class_fields=random_fields(rng, k, min_m=config.region_min_m, max_m=config.region_max_m,
                                   roughness=config.roughness),
        texture_fields=random_fields(rng, k * m, min_m=config.texture_min_m,
                                     max_m=config.texture_max_m, roughness=0.2),
        shade_field=random_fields(rng, 1, min_m=20.0, max_m=1000.0, roughness=0.5),
        bias=bias, endmembers=np.asarray(endmembers, np.float32), endmember_names=tuple(names))


@dataclass(frozen=True)
class PixelGrid:
    """A sensor's pixel grid over the ground: `size` x `size` pixels of `gsd` metres, centred
    on the scene centre; `ss` sub-pixels per side for footprint integration."""
    size: int
    gsd: float
    ss: int = 3

    def coords(self, subpixels: bool) -> np.ndarray:
        """Pixel (or sub-pixel) centres in metres from the scene centre, west->east."""
        n = self.size * (self.ss if subpixels else 1)
        step = self.gsd * self.size / n
        return (np.arange(n) + 0.5) * step - self.gsd * self.size / 2


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    """Softmax that accepts -inf logits (classes absent from a scene)."""
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def fine_class_abundances(ground: Ground, grid: PixelGrid) -> np.ndarray:
    """Class abundances [k, h*ss, x*ss] on the sub-pixel grid (sum to 1 per sub-pixel)."""
    xs = grid.coords(subpixels=True)
    logits = ground.class_fields.on_grid(xs, -xs) + ground.bias[:, None, None]  # rows north->south
    return softmax(logits / ground.config.border_temperature, axis=0)


def footprint_mean(fine: np.ndarray, ss: int) -> np.ndarray:
    """Average sub-pixels [k, h*ss, x*ss] over each pixel footprint -> [k, h, x]."""
    return reduce(fine, "k (h sh) (x sx) -> k h x", "mean", sh=ss, sx=ss)


def class_abundances(ground: Ground, grid: PixelGrid) -> np.ndarray:
    """Footprint-averaged class abundances [k, h, x] (sum to 1 per pixel)."""
    return footprint_mean(fine_class_abundances(ground, grid), grid.ss)


def endmember_abundances(ground: Ground, classes: np.ndarray, grid: PixelGrid,
                         rng: np.random.Generator) -> np.ndarray:
    """Endmember abundances [j, h, x] (j = k*m, sum to 1) from class abundances [k, h, x]."""
    cfg = ground.config
    xs = grid.coords(subpixels=False)
    texture = ground.texture_fields.on_grid(xs, -xs)
    texture = rearrange(texture, "(k m) h x -> k m h x", m=cfg.endmembers_per_class)
    within = softmax(texture / cfg.texture_temperature, axis=1)
    mix = rearrange(classes[:, None] * within, "k m h x -> (k m) h x")
    mix = mix * np.exp(cfg.abundance_jitter * rng.standard_normal(mix.shape))
    return (mix / mix.sum(axis=0, keepdims=True)).astype(np.float32)


def shading(ground: Ground, grid: PixelGrid) -> np.ndarray:
    """Multiplicative illumination [h, x], around 1."""
    xs = grid.coords(subpixels=False)
    field = ground.shade_field.on_grid(xs, -xs)[0]
    return np.clip(1.0 + ground.config.illumination_strength * field, 0.6, 1.4).astype(np.float32)


def dominant_class(classes: np.ndarray) -> np.ndarray:
    """Label map uint8 [h, x]: the class with the largest abundance in each pixel."""
    return classes.argmax(axis=0).astype(np.uint8)

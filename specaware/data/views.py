"""Views of a sample: the augmentations that make the model sensor-agnostic (docs/DESIGN.md section 1).

- spatial: crop to a size, flips, 90-degree rotations. One draw per sample is applied identically
  to `image`, `valid`, the `target` view and a label mask, and the tile's affine `transform` in
  `meta` is updated so georeferencing stays right;
- spectral: a random contiguous window or a random subset of the bands; wavelength and FWHM are
  indexed with the pixels, so metadata stays aligned with the bands;
- sensor simulation: resample the cube onto another sensor's bands through `srf_matrix`
  (Gaussian responses from centre + FWHM, the catalogue's tabulated curves where it has them,
  e.g. Sentinel-2 / Landsat). Invalid source pixels and absorption bands are left out of the
  weighted sum instead of being averaged in as zeros; a simulated pixel is valid only when the
  valid source bands carry at least `min_coverage` of its response.

Cross-sensor reconstruction: `ViewConfig.target` = "full" keeps the whole (spatially augmented)
cube as the target while the input becomes a spectral window / simulated sensor; "sensor" makes
the target a simulated sensor view. Input and target always share H, W.

Shapes: image float32 [C, H, W]; valid bool [C, H, W] or [H, W]; wavelength, fwhm float32 [C] nm.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from einops import rearrange

from specaware.data.normalize import NormalizeConfig, normalize_sample
from specaware.sensors import get_sensor, srf_matrix

PIXEL_KEYS = ("image", "valid")


@dataclass
class ViewConfig:
    crop: int = 0                    # crop to crop x crop pixels (train: random, eval: centre); 0 = keep
    flip: bool = True                # random horizontal / vertical flips (train only)
    rotate: bool = True              # random multiples of 90 degrees (train only)
    spectral: Literal["none", "window", "subset", "any"] = "none"  # input band selection
    min_bands: int = 8               # spectral view keeps at least this many bands
    max_bands: int = 0               # ... and at most this many; 0 = all bands
    input_sensors: list[str] = field(default_factory=list)  # sensors the input may become
    input_sensor_prob: float = 0.0   # chance the input is a simulated sensor view (train)
    target: Literal["none", "full", "sensor"] = "none"      # cross-sensor reconstruction target
    target_sensors: list[str] = field(default_factory=list)  # for target="sensor"
    min_coverage: float = 0.5        # share of a simulated band's response that must be valid
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)

    def pixel_free(self) -> bool:
        """True when the views touch no pixel (the loader may then decode straight into batches)."""
        return (self.crop == 0 and not self.flip and not self.rotate and self.spectral == "none"
                and not (self.input_sensors and self.input_sensor_prob > 0)
                and self.target == "none" and self.normalize.is_identity())


# --------------------------------------------------------------------------- spatial

def _pixel_arrays(sample: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays = {k: np.asarray(sample[k]) for k in PIXEL_KEYS}
    label = sample.get("label")
    if label is not None and np.ndim(label) == 2:
        arrays["label"] = np.asarray(label)
    return arrays


def _compose_transform(transform, pixel_map: np.ndarray):
    """New affine (rasterio order a, b, c, d, e, f) = old affine o pixel_map (3x3, new -> old)."""
    if transform is None:
        return None
    a, b, c, d, e, f = (float(x) for x in list(transform)[:6])
    old = np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])
    new = old @ pixel_map
    return [float(x) for x in new[:2].reshape(-1)]


def crop(sample: dict[str, Any], top: int, left: int, size: int) -> dict[str, Any]:
    """Cut a size x size window at (top, left) from every pixel array of the sample."""
    h, w = sample["image"].shape[-2:]
    if size > h or size > w or top < 0 or left < 0 or top + size > h or left + size > w:
        raise ValueError(f"crop of {size} at ({top}, {left}) does not fit the {h}x{w} tile of "
                         f"sample '{sample.get('meta', {}).get('key', '?')}'")
    out = dict(sample)
    for key, array in _pixel_arrays(sample).items():
        out[key] = array[..., top:top + size, left:left + size]
    shift = np.array([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]])
    return _with_transform(out, shift)


def flip_rotate(sample: dict[str, Any], flip_h: bool, flip_v: bool, k: int) -> dict[str, Any]:
    """Flip left-right / up-down, then rotate by k x 90 degrees counter-clockwise."""
    h, w = sample["image"].shape[-2:]
    pixel_map = np.eye(3)  # maps new pixel-corner coordinates (x=col, y=row) to old ones
    out = dict(sample)
    arrays = _pixel_arrays(sample)
    if flip_h:
        arrays = {key: a[..., :, ::-1] for key, a in arrays.items()}
        pixel_map = pixel_map @ np.array([[-1.0, 0, w], [0, 1.0, 0], [0, 0, 1.0]])
    if flip_v:
        arrays = {key: a[..., ::-1, :] for key, a in arrays.items()}
        pixel_map = pixel_map @ np.array([[1.0, 0, 0], [0, -1.0, h], [0, 0, 1.0]])
    for _ in range(k % 4):
        hh, ww = arrays["image"].shape[-2:]
        arrays = {key: np.rot90(a, 1, axes=(-2, -1)) for key, a in arrays.items()}
        # np.rot90: new[i, j] = old[j, ww - 1 - i]  ->  old_x = ww - new_y, old_y = new_x
        pixel_map = pixel_map @ np.array([[0, -1.0, ww], [1.0, 0, 0], [0, 0, 1.0]])
    out.update(arrays)
    return _with_transform(out, pixel_map)


def _with_transform(sample: dict[str, Any], pixel_map: np.ndarray) -> dict[str, Any]:
    meta = dict(sample.get("meta", {}))
    if meta.get("transform") is not None:
        meta["transform"] = _compose_transform(meta["transform"], pixel_map)
    sample["meta"] = meta
    return sample


def spatial_view(sample: dict[str, Any], cfg: ViewConfig, rng: np.random.Generator,
                 train: bool) -> dict[str, Any]:
    """Crop (random in training, centred in evaluation), then random flips and rotations."""
    h, w = sample["image"].shape[-2:]
    if cfg.crop:
        if cfg.crop > min(h, w):
            raise ValueError(f"views.crop={cfg.crop} is larger than the {h}x{w} tile of sample "
                             f"'{sample.get('meta', {}).get('key', '?')}'; lower views.crop")
        top = int(rng.integers(0, h - cfg.crop + 1)) if train else (h - cfg.crop) // 2
        left = int(rng.integers(0, w - cfg.crop + 1)) if train else (w - cfg.crop) // 2
        sample = crop(sample, top, left, cfg.crop)
    if train and (cfg.flip or cfg.rotate):
        flip_h = bool(cfg.flip and rng.random() < 0.5)
        flip_v = bool(cfg.flip and rng.random() < 0.5)
        k = int(rng.integers(0, 4)) if cfg.rotate else 0
        sample = flip_rotate(sample, flip_h, flip_v, k)
    return sample


# --------------------------------------------------------------------------- spectral

def select_bands(sample: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
    """Keep bands `index` [K] (in that order) of image, valid and their wavelength / fwhm."""
    index = np.asarray(index, dtype=np.int64)
    out = dict(sample)
    out["image"] = np.asarray(sample["image"])[index]
    valid = np.asarray(sample["valid"])
    out["valid"] = valid[index] if valid.ndim == 3 else valid
    out["wavelength"] = np.asarray(sample["wavelength"])[index]
    out["fwhm"] = np.asarray(sample["fwhm"])[index]
    return out


def spectral_view(sample: dict[str, Any], cfg: ViewConfig, rng: np.random.Generator
                  ) -> dict[str, Any]:
    """A random contiguous window or random (sorted) subset of the bands."""
    c = int(sample["image"].shape[0])
    high = c if cfg.max_bands <= 0 else min(cfg.max_bands, c)
    low = min(max(cfg.min_bands, 1), high)
    k = int(rng.integers(low, high + 1))
    kind = cfg.spectral if cfg.spectral != "any" else ("window", "subset")[int(rng.integers(2))]
    if kind == "window":
        start = int(rng.integers(0, c - k + 1))
        index = np.arange(start, start + k)
    else:
        index = np.sort(rng.choice(c, size=k, replace=False))
    return select_bands(sample, index)


# --------------------------------------------------------------------------- sensor simulation

@functools.lru_cache(maxsize=64)
def _cached_srf(src: bytes, sensor_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(weights [C_dst_kept, C_src], kept destination band indices) for one band set -> sensor."""
    wl, fwhm = np.frombuffer(src, dtype=np.float32).reshape(2, -1)
    sensor = get_sensor(sensor_name)
    weights = srf_matrix(wl, fwhm, sensor.wavelength, sensor.fwhm, sensor.responses)
    kept = np.flatnonzero(weights.sum(axis=1) > 0)
    return weights[kept], kept


def simulate_sensor(sample: dict[str, Any], sensor: str, min_coverage: float = 0.5
                    ) -> dict[str, Any]:
    """Resample a cube onto `sensor`'s bands (same ground, same H, W).

    Destination bands outside the source's spectral range are dropped (they carry no
    information); destination bands inside a water-absorption range of `sensor` are kept but
    marked invalid, as the tiler does for real data of that sensor.
    Returns a sample whose sensor is the simulated one, with meta["simulated_from"].
    """
    wl = np.asarray(sample["wavelength"], dtype=np.float32)
    fwhm = np.asarray(sample["fwhm"], dtype=np.float32)
    target = get_sensor(sensor)
    weights, kept = _cached_srf(np.concatenate([wl, fwhm]).tobytes(), target.name)
    if kept.size == 0:
        raise ValueError(f"cannot simulate {target.name} from sample "
                         f"'{sample.get('meta', {}).get('key', '?')}': its bands "
                         f"({wl.min():.0f}-{wl.max():.0f} nm) cover none of the sensor's bands")
    image = np.asarray(sample["image"], dtype=np.float32)
    c, h, w = image.shape
    valid = np.broadcast_to(np.asarray(sample["valid"], dtype=bool), image.shape)
    v = rearrange(valid, "c h w -> c (h w)").astype(np.float32)
    x = rearrange(image, "c h w -> c (h w)") * v
    num, den = weights @ x, weights @ v   # [C_dst, H*W]
    ok = den >= np.float32(min_coverage)
    ok &= ~target.absorption_mask()[kept][:, None]
    out_image = np.where(ok, num / np.maximum(den, np.float32(1e-12)), np.float32(0))
    out = dict(sample)
    out["image"] = rearrange(out_image.astype(np.float32), "c (h w) -> c h w", h=h, w=w)
    out["valid"] = rearrange(ok, "c (h w) -> c h w", h=h, w=w)
    out["wavelength"] = target.wavelength[kept].astype(np.float32)
    out["fwhm"] = target.fwhm[kept].astype(np.float32)
    out["sensor"] = target.name
    out["meta"] = dict(sample.get("meta", {}), simulated_from=str(sample["sensor"]))
    return out


# --------------------------------------------------------------------------- all together

def _target_view(sample: dict[str, Any], cfg: ViewConfig, rng: np.random.Generator,
                 train: bool) -> dict[str, Any] | None:
    if cfg.target == "none":
        return None
    if cfg.target == "full":
        view = sample
    else:
        if not cfg.target_sensors:
            raise ValueError("views.target='sensor' needs views.target_sensors (e.g. "
                             "['sentinel-2a', 'enmap'])")
        name = cfg.target_sensors[int(rng.integers(len(cfg.target_sensors)))] if train \
            else cfg.target_sensors[0]
        view = simulate_sensor(sample, name, cfg.min_coverage)
    keys = ("image", "valid", "wavelength", "fwhm", "gsd", "sensor", "level")
    return {k: view[k] for k in keys}


def apply_views(sample: dict[str, Any], cfg: ViewConfig, rng: np.random.Generator,
                train: bool = True) -> dict[str, Any]:
    """Spatial view of everything, then the target view, then the input's spectral/sensor view,
    then normalisation. Evaluation (train=False) is deterministic: centre crop, no flips or
    spectral sub-selection, first target sensor."""
    sample = spatial_view(sample, cfg, rng, train)
    target = _target_view(sample, cfg, rng, train)
    if train and cfg.input_sensors and rng.random() < cfg.input_sensor_prob:
        name = cfg.input_sensors[int(rng.integers(len(cfg.input_sensors)))]
        sample = simulate_sensor(sample, name, cfg.min_coverage)
    elif train and cfg.spectral != "none":
        sample = spectral_view(sample, cfg, rng)
    if target is not None:
        sample = dict(sample, target=target)
    return normalize_sample(sample, cfg.normalize)

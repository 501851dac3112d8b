"""TorchGeo samples and datasets as specaware samples and batches.

TorchGeo's sample convention (torchgeo.datasets documentation): a dict with `image` float
[C, H, W]; `mask` [H, W] or [1, H, W] (segmentation) or `label` (scene class); `crs` and
`bounds` (`bbox` before 0.8) for a GeoDataset. Band centres are not part of most samples: they
are dataset attributes, `dataset.wavelengths` (band name -> µm) indexed by `dataset.bands`, or
a per-sample `wavelength` [C] in µm (HySpecNet-11k). The pixel size is `dataset.res` (CRS units;
metres in a projected CRS).

specaware needs nm, FWHM and a GSD with every sample (docs/INTERFACES.md "A sample"), so
`TorchGeoAdapter` wraps a dataset (map-style, or a GeoDataset with a sampler that yields the
queries) and turns each sample into one: wavelengths from the arguments, else from the sample,
else from the dataset, converted from µm by specaware.model.units (or refused with
`strict_units=True`); FWHM, when nobody gives it, estimated from the band spacing; `mask` /
`label` become `label` (long). Batch with `specaware.data.collate.collate`,
which the adapter's `collate_fn` is, so fine-tuning (`specaware.finetune.train.fit`) runs on it.

Letters: c bands, H W pixels.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from specaware.model.units import to_nanometres

log = logging.getLogger(__name__)


def _vector(values, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32).reshape(1, -1)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} holds non-finite values: {t.flatten().tolist()[:8]}")
    return t


def dataset_wavelengths(dataset) -> list[float] | None:
    """Band centres (dataset units, µm for TorchGeo) from `dataset.wavelengths` and `.bands`."""
    table = getattr(dataset, "wavelengths", None)
    if table is None:
        return None
    if isinstance(table, dict):
        bands = list(getattr(dataset, "bands", None) or table)
        missing = [b for b in bands if b not in table]
        if missing:
            raise KeyError(f"{type(dataset).__name__}.wavelengths has no centre for bands "
                           f"{missing}; pass wavelengths=[...] to TorchGeoAdapter")
        return [float(table[b]) for b in bands]
    return [float(v) for v in torch.as_tensor(table).flatten().tolist()]


def dataset_gsd(dataset) -> float | None:
    res = getattr(dataset, "res", None)
    if res is None:
        return None
    values = [float(r) for r in (res if isinstance(res, (tuple, list)) else (res,))]
    return float(np.mean(np.abs(values)))


def band_set(wavelengths, fwhm, key: str, strict_units: bool | None):
    """(wavelength [C] nm, fwhm [C] nm) float32 arrays from centres and widths in nm or µm
    (specaware.model.units); FWHM, when not given, estimated from the spacing in nm. Shared by
    the TorchGeo adapter and the backbone's band set. `key` names the source in messages."""
    wl = _vector(wavelengths, key)
    if fwhm is None:
        from specaware.data.band_metadata import estimate_fwhm
        wl, _ = to_nanometres(wl, torch.zeros_like(wl), torch.ones_like(wl, dtype=torch.bool),
                              key, strict_units)
        fw = _vector(estimate_fwhm(np.asarray(wl[0], np.float64)), key)  # band spacing, nm
    else:
        fw = _vector(fwhm, f"{key} fwhm")
        if fw.shape != wl.shape:
            raise ValueError(f"{key}: {wl.shape[1]} centres but {fw.shape[1]} FWHM values; give "
                             "one FWHM per band (or none, to estimate it from the spacing)")
        wl, fw = to_nanometres(wl, fw, torch.ones_like(wl, dtype=torch.bool), key, strict_units)
    return wl[0].numpy(), fw[0].numpy()


def sample_from_torchgeo(sample: dict, wavelengths=None, fwhm=None, gsd: float | None = None,
                         sensor: str | None = None, level: str = "L2",
                         strict_units: bool | None = None, where: str = "sample") -> dict:
    """One TorchGeo sample -> a specaware sample (image float32 [C, H, W], valid, wavelength
    and fwhm [C] nm, gsd m, sensor, level, meta, label)."""
    if "image" not in sample:
        raise KeyError(f"{where} has no 'image' (keys: {sorted(sample)}); a TorchGeo image "
                       "dataset (is_image=True) or an IntersectionDataset of image and mask")
    image = torch.as_tensor(sample["image"]).float()
    if image.ndim != 3:
        raise ValueError(f"{where}['image'] is {tuple(image.shape)}, expected [C, H, W]")
    given = wavelengths if wavelengths is not None else sample.get("wavelength")
    if given is None:
        raise KeyError(f"{where} carries no band centres: pass wavelengths=[...] (µm or nm) "
                       "to TorchGeoAdapter, or use a dataset with a `wavelengths` table")
    wl, fw = band_set(given, fwhm, f"{where} wavelengths", strict_units)
    if wl.shape[0] != image.shape[0]:
        raise ValueError(f"{where}: image has {image.shape[0]} bands, wavelengths "
                         f"{wl.shape[0]}; give one centre per band in the order of `bands`")
    if gsd is None or not float(gsd) > 0:
        raise ValueError(f"{where}: no ground sampling distance; pass gsd= (metres per pixel)")
    out: dict[str, Any] = {
        "image": torch.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0),
        "valid": torch.isfinite(image), "wavelength": torch.from_numpy(wl),
        "fwhm": torch.from_numpy(fw), "gsd": float(gsd), "sensor": sensor or "unknown",
        "level": level, "meta": {"crs": str(sample.get("crs")) if "crs" in sample else None,
                                 "bounds": str(sample.get("bounds", sample.get("bbox")))}}
    if "mask" in sample:
        mask = torch.as_tensor(sample["mask"]).long()
        out["label"] = mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask
    elif "label" in sample:
        out["label"] = torch.as_tensor(sample["label"]).long()
    return out


class _Adapter:
    def _setup(self, dataset, wavelengths, fwhm, gsd, sensor, level, strict_units):
        self.dataset, self.sensor, self.level = dataset, sensor, level
        self.strict_units = strict_units
        self.wavelengths = wavelengths if wavelengths is not None else dataset_wavelengths(dataset)
        self.fwhm = fwhm
        self.gsd = gsd if gsd is not None else dataset_gsd(dataset)
        if self.wavelengths is not None:    # convert (and note) once, not per sample
            self.wavelengths, self.fwhm = band_set(self.wavelengths, fwhm,
                                                   f"{type(dataset).__name__} wavelengths",
                                                   strict_units)

    def convert(self, sample: dict, where: str) -> dict:
        return sample_from_torchgeo(sample, self.wavelengths, self.fwhm, self.gsd, self.sensor,
                                    self.level, self.strict_units, where)

    @staticmethod
    def collate_fn(samples: list[dict]) -> dict:
        from specaware.data.collate import collate
        return collate(samples)


class TorchGeoAdapter(_Adapter, Dataset):
    """A map-style TorchGeo dataset (NonGeoDataset, or any `dataset[i]` -> sample dict)."""

    def __init__(self, dataset, wavelengths=None, fwhm=None, gsd: float | None = None,
                 sensor: str | None = None, level: str = "L2",
                 strict_units: bool | None = None):
        self._setup(dataset, wavelengths, fwhm, gsd, sensor, level, strict_units)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.convert(self.dataset[i], f"{type(self.dataset).__name__}[{i}]")


class TorchGeoSampled(_Adapter, IterableDataset):
    """A GeoDataset read at the queries of a TorchGeo sampler (one pass over the sampler per
    epoch, as TorchGeo's own DataLoader(dataset, sampler=...) would)."""

    def __init__(self, dataset, sampler: Iterable, wavelengths=None, fwhm=None,
                 gsd: float | None = None, sensor: str | None = None, level: str = "L2",
                 strict_units: bool | None = None):
        self._setup(dataset, wavelengths, fwhm, gsd, sensor, level, strict_units)
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for query in self.sampler:
            yield self.convert(self.dataset[query], f"{type(self.dataset).__name__}[{query}]")


def adapt(dataset, sampler: Iterable | None = None, **kwargs):
    """`TorchGeoSampled` when a sampler is given, else `TorchGeoAdapter` (kwargs: wavelengths,
    fwhm, gsd, sensor, level, strict_units)."""
    if sampler is not None:
        return TorchGeoSampled(dataset, sampler, **kwargs)
    return TorchGeoAdapter(dataset, **kwargs)

"""Collation of samples with different band counts into one padded batch (docs/DESIGN.md section 1).

A batch of mixed sensors is padded along the band axis and carries `band_mask`; nothing is ever
truncated. Shapes (INTERFACES.md "A batch"):

    image      float32 [B, C, H, W]   padded bands are 0
    valid      bool    [B, C, H, W]   False at padded bands and wherever the sample said so
    band_mask  bool    [B, C]         True = real band
    wavelength float32 [B, C] nm (0 at padding);  fwhm float32 [B, C] nm
    gsd        float32 [B];  sensor, level: list[str];  meta: list[dict]
    target     optional dict with the same keys (cross-sensor reconstruction target)
    label      optional LongTensor [B] (scene label) or [B, H, W] (mask)

A sample's `image` may also be a lazy cube (anything with `.shape` and
`write_into(image_out, valid_out)`, see `shard_reader.LazyCube`): it is decoded straight into
its slot of the batch, which saves one full copy of the pixels per tile. Inside a DataLoader
worker the batch tensors are allocated in shared memory, so handing the batch to the main
process copies nothing; `specaware/data/batch_memory.py` recycles that memory between batches.

`bucketed` groups a sample stream into batches of one sensor / one band count, so that a batch
carries no padding at all when the data mixes sensors.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from specaware.data.batch_memory import BatchMemory, empty_tensor

BUCKET_KEYS = ("none", "sensor", "bands", "sensor_bands")


class CollateError(ValueError):
    """Samples that cannot share a batch; the message names the sample keys and the fix."""


def _key(sample: dict[str, Any]) -> str:
    return str(sample.get("meta", {}).get("key", "?"))


def _batch_tensors(b: int, c: int, h: int, w: int, memory: BatchMemory | None):
    """(tensors by key, flag index or None): image float32 / valid bool [b, c, h, w]
    uninitialised; wavelength, fwhm float32 / band_mask bool [b, c] zeroed; gsd float32 [b].
    With a pool they all live in one storage (4-byte values first, so every view is aligned):
    one storage to share with the main process per batch, released when all are gone."""
    if memory is None:
        return {"image": empty_tensor((b, c, h, w), torch.float32, zero=False),
                "valid": empty_tensor((b, c, h, w), torch.bool, zero=False),
                "wavelength": torch.zeros(b, c), "fwhm": torch.zeros(b, c),
                "gsd": torch.zeros(b), "band_mask": torch.zeros(b, c, dtype=torch.bool)}, None
    layout = [("image", torch.float32, (b, c, h, w)), ("wavelength", torch.float32, (b, c)),
              ("fwhm", torch.float32, (b, c)), ("gsd", torch.float32, (b,)),
              ("valid", torch.bool, (b, c, h, w)), ("band_mask", torch.bool, (b, c))]
    sizes = [int(np.prod(shape)) * (4 if dtype == torch.float32 else 1)
             for _, dtype, shape in layout]
    storage, index = memory.take(sum(sizes))
    tensors, offset = {}, 0
    for (key, dtype, shape), size in zip(layout, sizes):
        step = 4 if dtype == torch.float32 else 1
        tensors[key] = torch.empty(0, dtype=dtype).set_(storage, offset // step, shape)
        offset += size
    for key in ("wavelength", "fwhm", "band_mask"):
        tensors[key].zero_()
    return tensors, index


def _as_tensor(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


def _check_spatial(samples: list[dict[str, Any]], where: str) -> tuple[int, int]:
    sizes = {tuple(s["image"].shape[1:]) for s in samples}
    if len(sizes) != 1:
        listing = ", ".join(f"{_key(s)}: {tuple(s['image'].shape[1:])}" for s in samples[:8])
        raise CollateError(f"collate{where}: samples have different tile sizes ({listing}); crop "
                           f"them to one size first (ViewConfig.crop)")
    return sizes.pop()


def _write_pixels(sample: dict[str, Any], image_out: torch.Tensor, valid_out: torch.Tensor):
    """Copy one sample's pixels into its (already zeroed) batch slot [C_i, H, W]."""
    image = sample["image"]
    if hasattr(image, "write_into"):
        image.write_into(image_out, valid_out)
        return
    image_out.copy_(_as_tensor(image))
    if "valid" not in sample:   # a sample without a mask is valid everywhere
        valid_out.fill_(True)
        return
    valid = _as_tensor(sample["valid"])
    valid_out.copy_(valid if valid.dim() == 3 else valid.expand_as(valid_out))


def collate_views(samples: list[dict[str, Any]], pad_bands: int | None = None,
                  where: str = "", memory: BatchMemory | None = None) -> dict[str, Any]:
    """Pad and stack the pixel/band keys of `samples` (one view each); see module docstring.
    With `memory`, the tensors live in one of its storages (key `_slot`: its flag)."""
    if not samples:
        raise CollateError("collate: empty list of samples")
    h, w = _check_spatial(samples, where)
    bands = [int(s["image"].shape[0]) for s in samples]
    c = max(bands)
    if pad_bands is not None:
        if pad_bands < c:
            raise CollateError(f"collate{where}: pad_bands={pad_bands} but sample "
                               f"'{_key(samples[bands.index(c)])}' has {c} bands; bands are "
                               f"never truncated, raise pad_bands")
        c = pad_bands
    b = len(samples)
    out, slot = _batch_tensors(b, c, h, w, memory)
    image, valid, band_mask = out["image"], out["valid"], out["band_mask"]
    wavelength, fwhm = out["wavelength"], out["fwhm"]
    out["gsd"].copy_(torch.tensor([float(s["gsd"]) for s in samples], dtype=torch.float32))
    for i, (sample, ci) in enumerate(zip(samples, bands)):
        if ci < c:  # only padding needs explicit zeros; real bands are overwritten below
            image[i, ci:].zero_()
            valid[i, ci:].zero_()
        _write_pixels(sample, image[i, :ci], valid[i, :ci])
        wavelength[i, :ci] = _as_tensor(np.asarray(sample["wavelength"], dtype=np.float32))
        fwhm[i, :ci] = _as_tensor(np.asarray(sample["fwhm"], dtype=np.float32))
        band_mask[i, :ci] = True
    batch = {} if slot is None else {"_slot": slot}
    return batch | out | {
        "sensor": [str(s.get("sensor", "unknown")) for s in samples],
        "level": [str(s.get("level", "L2")) for s in samples],
        "meta": [s.get("meta", {}) for s in samples],
    }


def _label(samples: list[dict[str, Any]]) -> torch.Tensor | None:
    labels = [s.get("label", s.get("meta", {}).get("label")) for s in samples]
    present = [x is not None for x in labels]
    if not any(present):
        return None
    if not all(present):
        missing = [_key(s) for s, p in zip(samples, present) if not p]
        raise CollateError(f"collate: samples {missing[:5]} have no label while others do; "
                           f"filter unlabelled tiles before batching")
    return torch.stack([torch.as_tensor(np.asarray(x)).long() for x in labels])


def collate(samples: list[dict[str, Any]], pad_bands: int | None = None,
            memory: BatchMemory | None = None) -> dict[str, Any]:
    """Samples (numpy or torch) -> one batch of torch tensors, padded along bands.

    pad_bands: pad to this many bands (never fewer than the largest sample; default: largest).
    `target` views are collated (and padded) on their own, so input and target may have
    different band counts; either every sample has a target or none does.
    memory: reuse pixel storages (in a DataLoader worker, the consumer must pass each batch
    through a `ReleaseTracker`, else the pool only ever allocates).
    Two-date samples {"t1": sample, "t2": sample, "label"} (change detection) give
    {"t1": batch, "t2": batch, "label"}: each date is padded on its own, bands may differ.
    """
    if "t1" in samples[0]:
        out = {"t1": collate([s["t1"] for s in samples], pad_bands, memory),
               "t2": collate([s["t2"] for s in samples], pad_bands, memory)}
        label = _label(samples)
        return out if label is None else out | {"label": label}
    batch = collate_views(samples, pad_bands, memory=memory)
    has_target = [s.get("target") is not None for s in samples]
    if any(has_target):
        if not all(has_target):
            missing = [_key(s) for s, t in zip(samples, has_target) if not t]
            raise CollateError(f"collate: samples {missing[:5]} have no 'target' view while "
                               f"others do; configure views so every sample gets one")
        targets = [dict(s["target"], meta=s.get("meta", {})) for s in samples]
        target = collate_views(targets, where=" (target)", memory=memory)
        target.pop("meta")
        if target["image"].shape[-2:] != batch["image"].shape[-2:]:
            raise CollateError("collate: target views must have the same H, W as the input")
        batch["target"] = target
    label = _label(samples)
    if label is not None:
        batch["label"] = label
    return batch


def bucket_key(sample: dict[str, Any], by: str) -> Any:
    """The bucket a sample belongs to: its sensor, its band count, or both."""
    if by == "sensor":
        return str(sample["sensor"])
    if by == "bands":
        return int(sample["image"].shape[0])
    if by == "sensor_bands":
        return (str(sample["sensor"]), int(sample["image"].shape[0]))
    if by == "none":
        return None
    raise ValueError(f"bucket_by must be one of {BUCKET_KEYS}, got {by!r}")


def bucketed(samples: Iterable[dict[str, Any]], batch_size: int, by: str = "none",
             partial: bool = True) -> Iterator[list[dict[str, Any]]]:
    """Group a sample stream into lists of `batch_size` sharing `bucket_key(., by)`.

    A batch is emitted as soon as its bucket is full, so a common sensor is never held back by a
    rare one. partial: emit the unfilled buckets at the end of a finite stream (evaluation must
    see every sample); False drops them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    buckets: dict[Any, list[dict[str, Any]]] = {}
    for sample in samples:
        group = buckets.setdefault(bucket_key(sample, by), [])
        group.append(sample)
        if len(group) == batch_size:
            yield group
            buckets[bucket_key(sample, by)] = []
    if partial:
        yield from (group for group in buckets.values() if group)


def to_device(batch, device):
    """Every tensor of a (nested) batch moved to `device`; strings and dicts of metadata stay."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch

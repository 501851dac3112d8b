"""Streaming loader over webdataset shards (DESIGN.md section 1 "Streaming", INTERFACES.md).

    loader = make_loader("shards/", mode="train", batch_size=8, num_workers=2, rank=r,
                         world_size=n, views=ViewConfig(crop=96))
    for batch in loader: ...        # batches as in collate.py; loader.stats counts skips

One `webdataset.DataPipeline` per worker: shard urls -> tar members -> samples -> (eval: split
by sample index) -> decode -> shuffle buffer (train) -> views -> bucketed batches.

train: resampled and infinite. Each worker draws shards at random with replacement from its
  partition: shards are split over rank x worker when there are enough of them, else over
  ranks, else every worker draws from all; the random stream differs per rank, worker, seed
  and epoch. With curation weights every worker draws from all shards (a partition would give
  each worker's shards the same share of the stream whatever their weights). `epoch_samples` (per rank) only marks epoch boundaries (webdataset `with_epoch`).
  The shuffle buffer mixes the samples of several resampled shards inside each worker and the
  workers' batches interleave, which mixes the stream across workers without moving pixels
  through the main process a second time.
eval: one exact pass; every sample exactly once over all ranks x workers. Shards are split
  over the global workers (rank x num_workers). With fewer shards than global workers, every
  worker reads every shard and keeps sample i when i % (world_size * num_workers) is its own
  index: nothing is duplicated or lost, at the price of reading each shard several times.
  Ranks may get different numbers of batches.

Rank and world size are passed in: the data code never queries torch.distributed.
Robustness: unreadable shards, corrupt tar members, truncated shards (fewer samples than the
manifest says), incomplete and undecodable samples are skipped, counted per reason and logged
with shard and key (`loader.stats`). Past `max_skip_rate` (checked once `min_skip_samples` were
seen, and at the end of an eval pass) the run stops with a SkipRateError naming the shards.
Without pixel views, samples stay lazy (`LazyCube`, read-only views of the memory-mapped shard)
and are decoded straight into the shared-memory batch: the pixels are copied exactly once.
"""
from __future__ import annotations

import io
import json
import logging
import mmap
import random
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds

from specaware.data.codec import INT16_NODATA, decode_sample
from specaware.data.collate import bucketed, collate
from specaware.data.views import ViewConfig, apply_views

log = logging.getLogger(__name__)
LOG_FIRST_SKIPS = 20  # per worker; after that every 100th skip is logged


class SkipRateError(RuntimeError):
    """Too many samples were skipped; the message names the reasons and the shards."""


@dataclass
class SkipStats:
    """Samples seen (decoded or skipped) and skipped, per reason, with the first examples."""
    seen: int = 0
    skipped: Counter = field(default_factory=Counter)
    shards: Counter = field(default_factory=Counter)  # skips per shard
    examples: list[str] = field(default_factory=list)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def rate(self) -> float:
        return self.total_skipped / self.seen if self.seen else 0.0

    def skip(self, reason: str, shard: str, key: str, error: Any, count: int = 1) -> None:
        self.seen += count
        self.skipped[reason] += count
        self.shards[shard] += count
        text = f"{reason}: {shard} :: {key}: {error}"
        if len(self.examples) < 10:
            self.examples.append(text)
        if self.total_skipped <= LOG_FIRST_SKIPS or self.total_skipped % 100 == 0:
            log.warning("skipped %d sample(s) (%d so far): %s", count, self.total_skipped, text)

    def merge(self, other: "SkipStats") -> "SkipStats":
        return SkipStats(self.seen + other.seen, self.skipped + other.skipped,
                         self.shards + other.shards, (self.examples + other.examples)[:10])

    def check(self, max_rate: float, min_samples: int, final: bool = False) -> None:
        """Raise SkipRateError when the skip rate is above `max_rate`."""
        if self.seen == 0 or (self.seen < min_samples and not final) or self.rate <= max_rate:
            return
        worst = ", ".join(f"{s} ({n})" for s, n in self.shards.most_common(5))
        raise SkipRateError(
            f"skipped {self.total_skipped} of {self.seen} samples ({self.rate:.1%}), above "
            f"max_skip_rate={max_rate:.1%}. Reasons: {dict(self.skipped)}. Worst shards: "
            f"{worst}. First: {self.examples[:3]}. Re-create or re-download these shards "
            f"(`specaware shard`, `specaware inspect DIR`), or raise max_skip_rate.")

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.total_skipped, "rate": self.rate,
                "reasons": dict(self.skipped), "shards": dict(self.shards)}


# --------------------------------------------------------------------------- lazy pixels

class LazyCube:
    """Pixels of one sample, not yet decoded: `raw` [C, H, W] float16 (NaN = invalid) or int16
    (-32768 = invalid, value = raw * scale + offset), plus `band_valid` [C].

    `write_into` decodes into a float32 / bool slot of the batch, with the same result as
    `codec.decode_sample`, in a few vectorised torch passes.
    """

    def __init__(self, raw: np.ndarray, band_valid: np.ndarray, scale: float, offset: float):
        self.raw, self.band_valid = raw, np.asarray(band_valid, dtype=bool)
        self.scale, self.offset = float(scale), float(offset)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)

    def write_into(self, image: torch.Tensor, valid: torch.Tensor) -> None:
        """image float32 [C, H, W], valid bool [C, H, W] (slots of a batch) <- decoded pixels.

        Every step works in place on the slots (no float32 temporaries): this runs once per
        tile per epoch and is most of the loader's cost.
        """
        raw = torch.from_numpy(self.raw)
        image.copy_(raw)
        if raw.dtype == torch.int16:
            clean = int(raw.min()) > INT16_NODATA
            if not clean:
                torch.ne(raw, INT16_NODATA, out=valid)
            if self.scale != 1.0:
                image.mul_(self.scale)
            if self.offset != 0.0:
                image.add_(self.offset)
            if not clean:
                image.mul_(valid)  # sentinel pixels -> 0 (values are finite: no NaN * 0)
        else:  # a sum is NaN/inf iff some element is, and far cheaper than an elementwise test
            clean = bool(torch.isfinite(image.sum()))
            if not clean:
                _finite_into(raw, valid)
                image.nan_to_num_(0.0, 0.0, 0.0)  # exactly the non-finite pixels become 0
        if clean:
            valid.fill_(True)
        if not self.band_valid.all():
            dropped = torch.from_numpy(np.flatnonzero(~self.band_valid))
            valid.index_fill_(0, dropped, False)
            image.index_fill_(0, dropped, 0.0)

    def materialize(self) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 [C, H, W], valid bool [C, H, W]) as numpy arrays."""
        image = torch.empty(self.shape, dtype=torch.float32)
        valid = torch.empty(self.shape, dtype=torch.bool)
        self.write_into(image, valid)
        return image.numpy(), valid.numpy()


def _finite_into(raw: torch.Tensor, out: torch.Tensor) -> None:
    """out <- isfinite(raw). A float16 is non-finite iff its exponent bits are all ones; testing
    the bits is several times faster than `torch.isfinite` on CPU."""
    if raw.dtype == torch.float16:
        torch.ne(raw.view(torch.int16).bitwise_and(0x7C00), 0x7C00, out=out)
    else:
        out.copy_(torch.isfinite(raw))


def _npy_view(buffer: mmap.mmap, offset: int, size: int) -> np.ndarray:
    """Zero-copy array of a `.npy` member stored at buffer[offset:offset + size]."""
    head = io.BytesIO(buffer[offset:offset + min(size, 65536)])
    version = np.lib.format.read_magic(head)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(head)
    count = int(np.prod(shape))
    if fortran or dtype.hasobject or head.tell() + count * dtype.itemsize > size:
        raise ValueError(f"npy member {shape} {dtype} does not fit its {size} bytes")
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset + head.tell()
                         ).reshape(shape)


def decode_lazy(members: dict[str, Any], key: str) -> dict[str, Any]:
    """Contract sample whose `image` is a LazyCube (and `valid` None until collated).

    The codec validates the header and builds the metadata on a 1x1 corner of the cube, so the
    full pixels are decoded only once, into the batch.
    """
    raw, header = members["npy"], json.loads(members["json"])
    if raw.ndim != 3:
        raise ValueError(f"array of shape {raw.shape}, expected [C, H, W]")
    sample = decode_sample(raw[:, :1, :1], header, key)
    sample["image"] = LazyCube(raw, header["band_valid"], header.get("scale", 1.0),
                               header.get("offset", 0.0))
    sample["valid"] = None
    return sample


def decode_eager(members: dict[str, Any], key: str) -> dict[str, Any]:
    """Contract sample with numpy pixels (the views need them)."""
    sample = decode_lazy(members, key)
    sample["image"], sample["valid"] = sample["image"].materialize()
    return sample


# --------------------------------------------------------------------------- shards

def resolve_source(source) -> tuple[list[str], dict[str, int]]:
    """(shard paths, expected sample count per shard name) from a shard dir with manifest.json,
    a list of tar paths, or a brace pattern such as "data/shard-{000000..000009}.tar"."""
    counts: dict[str, int] = {}
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        from specaware.data.shard import read_manifest
        manifest = read_manifest(source)
        counts = {s["name"]: int(s["count"]) for s in manifest["shards"]}
        urls = [str(Path(source) / s["name"]) for s in manifest["shards"]]
    elif isinstance(source, (str, Path)):
        urls = list(braceexpand.braceexpand(str(source)))
    else:
        urls = [str(u) for u in source]
    if not urls:
        raise ValueError(f"no shards found in {source!r}")
    return urls, counts


def _members(path: str) -> Iterator[tuple[str, str, int, int, mmap.mmap]]:
    """(key, extension, offset, size, buffer) of each regular member, in tar order."""
    with open(path, "rb") as handle:
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        end = len(buffer)
        with tarfile.open(fileobj=handle, mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                if info.offset_data + info.size > end:
                    raise EOFError(f"member {info.name} ends at byte "
                                   f"{info.offset_data + info.size}, beyond the file end {end}")
                key, _, ext = Path(info.name).name.partition(".")
                yield key, ext.lower(), info.offset_data, info.size, buffer


def read_shard(path: str, stats: SkipStats, expected: int | None = None
               ) -> Iterator[dict[str, Any]]:
    """Samples {"__key__", "__url__", "npy": array view, "json": bytes} of one tar shard.

    Members of one key are consecutive (the shard writer guarantees it). A sample with a
    missing or corrupt member is yielded with "__broken__" (the reason), for the decode stage to
    count; an unreadable or truncated tar (fewer samples than `expected`) is counted here.
    """
    name, current, produced = Path(path).name, None, 0

    def finish(sample):
        nonlocal produced
        produced += 1
        missing = sorted({"npy", "json"} - set(sample))
        if missing and "__broken__" not in sample:
            sample["__broken__"] = f"incomplete sample: no .{missing[0]} member"
        return sample

    try:
        for key, ext, offset, size, buffer in _members(path):
            if current is not None and key != current["__key__"]:
                yield finish(current)
                current = None
            current = current or {"__key__": key, "__url__": path}
            try:
                current[ext] = (_npy_view(buffer, offset, size) if ext == "npy"
                                else bytes(buffer[offset:offset + size]))
            except Exception as err:  # noqa: BLE001 - a corrupt member spoils its sample
                current["__broken__"] = f"corrupt .{ext} member ({err})"
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        # the partial sample at the break is lost with the rest of the shard
        lost = max((expected or 0) - produced, 1)
        stats.skip("truncated or unreadable shard", name, current["__key__"] if current else "-",
                   f"{type(err).__name__}: {err}", count=lost)
        return
    if current is not None:
        yield finish(current)
    if expected is not None and produced < expected:
        stats.skip("truncated shard", name, "-", f"{produced} of {expected} samples in the "
                   f"manifest", count=expected - produced)


# --------------------------------------------------------------------------- the pipeline

@dataclass
class StreamSpec:
    """Everything a worker needs to build its pipeline (pickled into each worker)."""
    urls: list[str]
    counts: dict[str, int]
    mode: str
    batch_size: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    shuffle_buffer: int = 256
    views: ViewConfig | None = None
    max_skip_rate: float = 0.05
    min_skip_samples: int = 64
    bucket_by: str = "none"
    pad_bands: int | None = None
    keys: frozenset[str] | None = None           # keep only these samples
    weights: Mapping[str, float] | None = None   # train: draw samples in proportion to these
    shard_peak: dict[str, float] | None = None   # max weight per shard name
    epoch_batches: int | None = None             # per worker, train only


class _Worker:
    """Per-iteration state of one worker: who it is, its random streams, its skip counts."""

    def __init__(self, spec: StreamSpec, epoch: int):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        self.spec, self.train = spec, spec.mode == "train"
        self.index, self.count = spec.rank * workers + worker, spec.world_size * workers
        self.rng = np.random.default_rng([spec.seed, epoch, spec.rank, worker])
        self.stats = SkipStats()
        self.sample_split = not self.train and len(spec.urls) < self.count
        self.lazy = spec.views is None or spec.views.pixel_free()

    def partition(self) -> list[str]:
        urls, spec = self.spec.urls, self.spec
        if self.train and spec.weights is not None:
            # every worker yields the same number of samples, so weighted draws are unbiased
            # only if each worker draws from all shards (curation strata cluster in shards)
            return urls
        if len(urls) >= self.count:
            return urls[self.index::self.count]
        if self.train and len(urls) >= spec.world_size:
            return urls[spec.rank::spec.world_size]
        return urls

    def shard_urls(self) -> Iterator[dict[str, str]]:
        urls = self.partition()
        if not self.train:
            yield from ({"url": u} for u in urls)
            return
        peak = self.spec.shard_peak
        p = None
        if peak is not None:
            p = np.array([peak.get(Path(u).name, 0.0) for u in urls], dtype=np.float64)
            if p.sum() <= 0:
                raise ValueError(f"rank {self.spec.rank}: none of its {len(urls)} shards holds a "
                                 f"sample with positive curation weight")
            p /= p.sum()
        while True:
            yield {"url": urls[int(self.rng.choice(len(urls), p=p))]}

    def samples(self, urls: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
        position = 0
        for item in urls:
            url = item["url"]
            owner = not self.sample_split or self.index == 0
            stats = self.stats if owner else SkipStats()  # shard-level losses counted once
            for raw in read_shard(url, stats, self.spec.counts.get(Path(url).name)):
                position += 1
                if self.sample_split and (position - 1) % self.count != self.index:
                    continue
                yield raw

    def _keep(self, raw: dict[str, Any]) -> bool:
        spec, key = self.spec, raw["__key__"]
        if spec.keys is not None and key not in spec.keys:
            return False
        if spec.weights is None:
            return True
        weight = spec.weights.get(key, 0.0)
        if not self.train or weight <= 0:
            return weight > 0
        # shards are drawn in proportion to their peak weight, samples accepted with
        # weight / peak: every sample is then drawn in proportion to its own weight
        return self.rng.random() < weight / spec.shard_peak[Path(raw["__url__"]).name]

    def decode(self, raws: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        spec = self.spec
        for raw in raws:
            if not self._keep(raw):
                continue
            shard, key = Path(raw["__url__"]).name, raw["__key__"]
            if "__broken__" in raw:
                self.stats.skip("corrupt sample", shard, key, raw["__broken__"])
            else:
                try:
                    sample = (decode_lazy if self.lazy else decode_eager)(raw, key)
                    sample["meta"]["shard"] = shard
                    self.stats.seen += 1
                    yield sample
                except Exception as err:  # noqa: BLE001 - any decode failure is a broken sample
                    self.stats.skip("undecodable sample", shard, key, f"{type(err).__name__}: {err}")
            self.stats.check(spec.max_skip_rate, spec.min_skip_samples)

    def shuffle(self, raws: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        size = self.spec.shuffle_buffer
        if not self.train or size <= 1:
            return raws
        rng = random.Random(int(self.rng.integers(2**63)))
        return wds.filters.shuffle(size, initial=max(size // 4, 1), rng=rng)(raws)

    def views(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if self.lazy:
            return iter(samples)
        return (apply_views(s, self.spec.views, self.rng, self.train) for s in samples)

    def batches(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        spec = self.spec
        for group in bucketed(samples, spec.batch_size, spec.bucket_by, partial=not self.train):
            batch = collate(group, spec.pad_bands)
            batch["_stats"] = (self.index, self.stats.merge(SkipStats()))
            yield batch
        yield {"_stats": (self.index, self.stats), "_final": True}


class ShardStream(torch.utils.data.IterableDataset):
    """The per-worker webdataset pipeline (see the module docstring)."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec, self.epoch = spec, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if torch.utils.data.get_worker_info() is not None:
            torch.set_num_threads(1)  # workers are processes already; threads oversubscribe
        worker = _Worker(self.spec, self.epoch)
        pipeline = wds.DataPipeline(worker.shard_urls, worker.samples, worker.shuffle,
                                    worker.decode, worker.views, worker.batches)
        if worker.train and self.spec.epoch_batches:
            pipeline = pipeline.with_epoch(self.spec.epoch_batches)
        return iter(pipeline)


class ShardLoader:
    """Iterable of batches over a shard set; `stats` (SkipStats) sums the skips of all workers.

    Each `iter()` is one epoch (eval: one exact pass; train: infinite, or `epoch_samples`).
    `state_dict()` / `load_state_dict()` carry the epoch counter through checkpoints, so a
    resumed run continues with fresh random streams instead of replaying the first epoch.
    """

    def __init__(self, spec: StreamSpec, num_workers: int, prefetch_factor: int = 2):
        self.spec, self.num_workers, self.prefetch_factor = spec, num_workers, prefetch_factor
        self.dataset = ShardStream(spec)
        self.epoch = 0
        self._past = SkipStats()        # finished epochs
        self._current: dict[int, SkipStats] = {}

    @property
    def stats(self) -> SkipStats:
        total = self._past
        for part in self._current.values():
            total = total.merge(part)
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seed": self.spec.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])

    def _data_loader(self) -> torch.utils.data.DataLoader:
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers else {}
        return torch.utils.data.DataLoader(self.dataset, batch_size=None,
                                           num_workers=self.num_workers, **extra)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.dataset.epoch = self.epoch
        self.epoch += 1
        self._past, self._current = self.stats, {}
        spec = self.spec
        for item in self._data_loader():
            worker, stats = item.pop("_stats")
            self._current[worker] = stats
            self.stats.check(spec.max_skip_rate, spec.min_skip_samples)
            if not item.pop("_final", False):
                yield item
        if spec.mode == "eval":
            self.stats.check(spec.max_skip_rate, spec.min_skip_samples, final=True)
            log.info("eval pass over %d shards: %s", len(spec.urls), self.stats.as_dict())


def make_loader(source, *, mode: str = "train", batch_size: int, num_workers: int = 2,
                rank: int = 0, world_size: int = 1, seed: int = 0, shuffle_buffer: int = 256,
                views: ViewConfig | None = None, max_skip_rate: float = 0.05,
                epoch_samples: int | None = None, min_skip_samples: int = 64,
                bucket_by: str = "none", pad_bands: int | None = None,
                keys: Iterable[str] | None = None, weights: Mapping[str, float] | None = None,
                prefetch_factor: int = 2) -> ShardLoader:
    """Batches from webdataset shards (see the module docstring for train/eval semantics).

    source: shard dir with manifest.json, list of tar paths, or brace pattern.
    views: None = decode only (fastest path); ViewConfig for augmentations and targets.
    max_skip_rate: fraction of skipped samples that stops the run (after min_skip_samples).
    epoch_samples: train only, samples per rank per epoch (None = one infinite epoch).
    bucket_by: "none" | "sensor" | "bands" | "sensor_bands" (batches without mixed padding).
    keys / weights: curation (curate.py): keep only `keys`; draw samples in proportion to
    `weights` in training (weight 0 = never; eval keeps every sample of positive weight).
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"make_loader: mode must be 'train' or 'eval', got {mode!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"make_loader: rank {rank} outside world_size {world_size}")
    urls, counts = resolve_source(source)
    missing = [u for u in urls if not Path(u).exists()]
    if missing:
        raise FileNotFoundError(f"make_loader: {len(missing)} shard(s) not found, e.g. "
                                f"{missing[:3]}; check the path or the brace pattern")
    keys = frozenset(str(k) for k in keys) if keys is not None else None
    if keys is not None and not keys:
        raise ValueError("make_loader: `keys` is empty; curation removed every sample")
    peak = None
    if weights is not None:
        weights = {str(k): float(w) for k, w in weights.items()}
        peak = _shard_peaks(source, weights)
    workers = max(num_workers, 1)
    epoch_batches = None
    if mode == "train" and epoch_samples:
        epoch_batches = -(-epoch_samples // (batch_size * workers))
    spec = StreamSpec(urls, counts, mode, batch_size, rank, world_size, seed, shuffle_buffer,
                      views, max_skip_rate, min_skip_samples, bucket_by, pad_bands, keys,
                      weights, peak, epoch_batches)
    return ShardLoader(spec, num_workers, prefetch_factor)


def _shard_peaks(source, weights: Mapping[str, float]) -> dict[str, float]:
    """Max curation weight per shard name, from the manifest rows (key -> shard)."""
    if not (isinstance(source, (str, Path)) and Path(source).is_dir()):
        raise ValueError("make_loader: `weights` need a shard dir with manifest.json (to know "
                         "which shard holds which key)")
    from specaware.data.shard import read_manifest
    peak: dict[str, float] = {}
    for row in read_manifest(source)["tiles"]:
        w = weights.get(str(row["key"]), 0.0)
        peak[row["shard"]] = max(peak.get(row["shard"], 0.0), w)
    return peak

"""Streaming loader over webdataset shards (docs/DESIGN.md section 1 "Streaming", INTERFACES.md).

    loader = make_loader("shards/", mode="train", batch_size=8, num_workers=2, rank=r,
                         world_size=n, views=ViewConfig(crop=96))
    for batch in loader: ...        # batches as in collate.py; loader.stats counts skips

One `webdataset.DataPipeline` per worker: shard urls -> tar members -> samples -> (eval: split
by sample index) -> shuffle buffer (train) -> decode -> views -> bucketed batches. Every sample
and every loss is counted at decode, after the buffer, so the skip rate is a true fraction.

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
Each worker recycles the shared memory of batches the consumer has dropped
(batch_memory.BatchMemory, released by the batch_memory.ReleaseTracker that every batch passes
here in the consumer process).
Reading shards, lazy pixels and skip accounting live in shard_reader.py.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from specaware.data.batch_memory import BatchMemory, ReleaseTracker, release_flags
from specaware.data.collate import bucketed, collate
from specaware.data.shard_reader import (  # noqa: F401 - re-exported: the loader API
    LazyCube, SkipRateError, SkipStats, decode_eager, decode_lazy, missing_shards, read_shard,
    resolve_shard_set, resolve_source)
from specaware.data.codec import SampleMetadataError
from specaware.data.tar_stream import read_ahead
from specaware.data.views import ViewConfig, apply_views

log = logging.getLogger(__name__)

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
    tile: int | None = None                      # the manifest's tile size (pixels)


class _Worker:
    """Per-iteration state of one worker: who it is, its random streams, its skip counts."""

    def __init__(self, spec: StreamSpec, epoch: int, flags=None, slots: int = 8):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # a worker's flags are its slice of the consumer's array; one process needs none
        self.memory = (BatchMemory(flags, worker * slots, slots, shared=True) if info
                       else BatchMemory(count=slots))
        self.spec, self.train = spec, spec.mode == "train"
        self.index, self.count = spec.rank * workers + worker, spec.world_size * workers
        self.rng = np.random.default_rng([spec.seed, epoch, spec.rank, worker])
        self.stats = SkipStats()
        self.tile: tuple[int, int] | None = None   # (H, W) every tile must have, once known
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
        """Raw samples of the shards, then one `__lost__` item per shard-level loss (an
        unreadable or truncated shard). The losses travel through the shuffle buffer like
        samples and are counted in `decode`, at the same point as the good samples: counted
        here, a 2000-sample buffer made 2 % of lost data read as 17 % (good samples still
        sat in the buffer, uncounted). The next remote shard is requested while the current one
        is decoded (tar_stream.read_ahead)."""
        position = 0
        for url, members in read_ahead(item["url"] for item in urls):
            losses = _Losses()
            for raw in read_shard(url, losses, self.spec.counts.get(Path(url).name), members):
                position += 1
                if self.sample_split and (position - 1) % self.count != self.index:
                    continue
                yield raw
            if not self.sample_split or self.index == 0:  # shard-level losses counted once
                yield from ({"__lost__": loss, "__key__": loss[2], "__url__": url}
                            for loss in losses)

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
            if "__lost__" in raw:
                self.stats.skip(*raw["__lost__"])
            elif self._keep(raw):
                sample = self._decode_one(raw)
                if sample is not None:
                    self.stats.seen += 1
                    yield sample
            self.stats.check(spec.max_skip_rate, spec.min_skip_samples)

    def _decode_one(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The decoded sample, or None after counting why it is skipped (naming shard and key)."""
        shard, key = Path(raw["__url__"]).name, raw["__key__"]
        if "__broken__" in raw:
            self.stats.skip("corrupt sample", shard, key, raw["__broken__"])
            return None
        try:
            sample = (decode_lazy if self.lazy else decode_eager)(raw, key)
        except SampleMetadataError as err:
            self.stats.skip("bad metadata", shard, key, str(err))
            return None
        except Exception as err:  # noqa: BLE001 - any decode failure is a broken sample
            self.stats.skip("undecodable sample", shard, key, f"{type(err).__name__}: {err}")
            return None
        problem = self._size_problem(tuple(sample["image"].shape[1:]))
        if problem:
            self.stats.skip("off-size tile", shard, key, problem)
            return None
        sample["meta"]["shard"] = shard
        return sample

    def _size_problem(self, size: tuple[int, int]) -> str | None:
        """Why a tile of `size` (H, W) cannot share a batch, or None: with a crop view it must
        hold the crop; without, it must have the shard set's tile size (the manifest's, else
        the first tile this worker decoded)."""
        crop = self.spec.views.crop if self.spec.views is not None else 0
        if crop:
            return None if min(size) >= crop else \
                f"{size[0]}x{size[1]} tile is smaller than views.crop={crop}"
        if self.tile is None:
            self.tile = (self.spec.tile, self.spec.tile) if self.spec.tile else size
        if size == self.tile:
            return None
        return (f"{size[0]}x{size[1]} tile in a shard set of {self.tile[0]}x{self.tile[1]} "
                "tiles; re-shard its scene with the set's tile size")

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
            batch = collate(group, spec.pad_bands, memory=self.memory)
            batch["_stats"] = (self.index, self.stats.merge(SkipStats()))
            yield batch
        yield {"_stats": (self.index, self.stats), "_final": True}


class _Losses(list):
    """Collects `read_shard`'s shard-level losses as (reason, shard, key, error, count), for
    `SkipStats.skip` to count later."""

    def skip(self, reason: str, shard: str, key: str, error: Any, count: int = 1) -> None:
        self.append((reason, shard, key, error, count))


class ShardStream(torch.utils.data.IterableDataset):
    """The per-worker webdataset pipeline (see the module docstring)."""

    def __init__(self, spec: StreamSpec, slots: int = 8):
        super().__init__()
        self.spec, self.epoch, self.slots = spec, 0, slots
        self.flags = None  # release flags of the current epoch's workers (ShardLoader sets them)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if torch.utils.data.get_worker_info() is not None:
            torch.set_num_threads(1)  # workers are processes already; threads oversubscribe
        worker = _Worker(self.spec, self.epoch, self.flags, self.slots)
        pipeline = wds.DataPipeline(worker.shard_urls, worker.samples, worker.shuffle,
                                    worker.decode, worker.views, worker.batches)
        if worker.train and self.spec.epoch_batches:
            pipeline = pipeline.with_epoch(self.spec.epoch_batches)
        return iter(pipeline)


class ShardLoader:
    """Iterable of batches over a shard set; `stats` (SkipStats) sums the skips of all workers.

    Each `iter()` is one epoch (eval: one exact pass; train: infinite, or `epoch_samples`).
    A loader holds no state worth checkpointing: the trainer starts a new one, seeded from
    (train.seed, step), at step 0 and after every checkpoint, so a resumed run draws the
    stream the uninterrupted run drew (training/trainer.py, "Data-stream position").
    """

    def __init__(self, spec: StreamSpec, num_workers: int, prefetch_factor: int = 2):
        self.spec, self.num_workers, self.prefetch_factor = spec, num_workers, prefetch_factor
        # batches alive per worker: its prefetched ones, the one being built, the consumer's
        # current and previous one; twice that when targets take a second storage
        self.dataset = ShardStream(spec, slots=2 * (prefetch_factor + 3))
        self.epoch = 0
        self._past = SkipStats()        # finished epochs
        self._current: dict[int, SkipStats] = {}

    @property
    def stats(self) -> SkipStats:
        total = self._past
        for part in self._current.values():
            total = total.merge(part)
        return total

    def _data_loader(self) -> torch.utils.data.DataLoader:
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers else {}
        # fresh flags per epoch: the workers are new, batches of the last epoch may live on
        self.dataset.flags = (release_flags(self.num_workers * self.dataset.slots)
                              if self.num_workers else None)
        return torch.utils.data.DataLoader(self.dataset, batch_size=None,
                                           num_workers=self.num_workers, **extra)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.dataset.epoch = self.epoch
        self.epoch += 1
        self._past, self._current = self.stats, {}
        spec = self.spec
        loader = self._data_loader()
        tracker = ReleaseTracker(self.dataset.flags) if self.dataset.flags is not None else None
        for item in loader:
            worker, stats = item.pop("_stats")
            self._current[worker] = stats
            self.stats.check(spec.max_skip_rate, spec.min_skip_samples)
            if not item.pop("_final", False):
                yield tracker.adopt(item) if tracker is not None else item
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
    urls, counts, tile = resolve_shard_set(source)
    # a remote set with a manifest is complete (the manifest is uploaded last), and the trainer
    # checked its shards once (require_shard_files): no HEAD per shard at every loader build;
    # a shard deleted since is a counted skip naming its URL
    from specaware.data.object_store import is_store_url
    listed_remote = bool(counts) and all(is_store_url(u) for u in urls)
    missing = [] if listed_remote else missing_shards(urls)
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
                      weights, peak, epoch_batches, tile)
    return ShardLoader(spec, num_workers, prefetch_factor)


def _shard_peaks(source, weights: Mapping[str, float]) -> dict[str, float]:
    """Max curation weight per shard name, from the manifest rows (key -> shard)."""
    from specaware.data.object_store import is_store_url
    if not (isinstance(source, (str, Path)) and (Path(source).is_dir() or is_store_url(source))):
        raise ValueError("make_loader: `weights` need a shard dir with manifest.json (to know "
                         "which shard holds which key)")
    from specaware.data.shard import read_manifest
    peak: dict[str, float] = {}
    for row in read_manifest(source)["tiles"]:
        w = weights.get(str(row["key"]), 0.0)
        peak[row["shard"]] = max(peak.get(row["shard"], 0.0), w)
    return peak

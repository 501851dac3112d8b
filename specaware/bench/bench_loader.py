"""Loader throughput versus a plain `np.load` of the same arrays from memory (issue 2).

Writes a shard set of 128x128 tiles with 224 AVIRIS-Classic bands (float16 or int16, a few
invalid pixels, absorption bands flagged, like `specaware shard` output) to a temp dir, then
measures side by side in one run, in tiles/s over the same number of tiles:
- plain:  `np.load` of every tile's `.npy` bytes already held in memory, converted to float32
          (int16: times its scale), in one process: the floor of any reader that hands float32
          pixels to a model. The raw `np.load` without conversion is printed for information;
- loader: `make_loader(..., num_workers=2)` batches (float32 image, bool valid mask, band
          metadata, padded and collated into shared memory) read from the shard files (page
          cache warm). Train stream in steady state: before the clock starts the workers are
          up and more batches were consumed than the DataLoader prefetches, so no batch made
          before the clock counts (the consumer is far faster than the loader: it then waits on
          every batch). The eval pass is timed whole, worker start-up included (it is what one
          evaluation costs).
Both sides end where a model would start: the consumer reads every 4 KiB page of the pixels it
got (image and valid mask; the plain array), so mapping the workers' shared memory into the
main process is paid for, as it would be by any real consumer.
Each figure is the median of `--repeats` passes; plain passes run before and after the loader
so drift of a shared machine shows up in both. Prints tiles/s and the ratio loader / plain;
target: ratio >= 0.7 for the train stream. CPU milliseconds per tile (user + system, main
process and workers) are printed too: unlike tiles/s they barely depend on what else runs.
Run:

    PYTHONPATH=. .venv/bin/python bench/bench_loader.py [--quick]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from specaware.data.codec import encode_sample
from specaware.data.sample import make_sample
from specaware.data.shard import ShardWriter, make_key
from specaware.data.stream import make_loader
from specaware.data.views import ViewConfig
from specaware.sensors import get_sensor

TARGET = 0.7
PREFETCH = 2  # make_loader's default prefetch_factor: batches queued per worker
PAGE = 4096


def write_shards(out: Path, tiles: int, size: int, per_shard: int, dtype: str) -> None:
    """`tiles` AVIRIS-Classic tiles [224, size, size] in shards of `per_shard` samples."""
    sensor = get_sensor("aviris-classic")
    rng = np.random.default_rng(0)
    band_valid = ~sensor.absorption_mask()
    base = rng.uniform(0.02, 0.6, (sensor.num_bands, 1, 1)).astype(np.float32)
    with ShardWriter(out, shard_size=per_shard) as writer:
        for i in range(tiles):
            noise = rng.standard_normal((sensor.num_bands, size, size), dtype=np.float32)
            cube = base + 0.01 * noise
            valid = np.ones((size, size), bool)
            if i % 2:  # half the tiles carry a few invalid pixels (the slower decode path)
                valid[rng.integers(0, size, 20), rng.integers(0, size, 20)] = False
            key = make_key("bench", row=i * size, col=0)
            sample = make_sample(cube, sensor.wavelength, sensor.fwhm, valid=valid, gsd=15.0,
                                 sensor=sensor.name, level="L2", meta={"key": key})
            writer.add(key, encode_sample(sample, dtype=dtype, band_valid=band_valid),
                       row={"sensor": sensor.name, "bands": sensor.num_bands, "descriptors": {}})


def read_members(out: Path) -> tuple[list[bytes], list[float]]:
    """(`.npy` bytes, int16 scale) of every tile, in shard order, held in memory."""
    blobs, scales = [], []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                payload = tar.extractfile(member).read()
                if member.name.endswith(".npy"):
                    blobs.append(payload)
                elif member.name.endswith(".json"):
                    scales.append(float(json.loads(payload).get("scale", 1.0)))
    return blobs, scales


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished (joined) children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_ms_per_tile(fn, tiles: int) -> float:
    """CPU milliseconds per tile spent by `fn()` in this process and the workers it joined.
    Unlike tiles/s this barely depends on what else runs on the machine."""
    start = cpu_seconds()
    fn()
    return (cpu_seconds() - start) * 1e3 / tiles


def live_workers_cpu() -> float:
    """User + system CPU seconds of this process's live child processes (Linux /proc; 0.0
    elsewhere): DataLoader workers of an infinite stream are never joined."""
    pids: set[str] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids |= set((task / "children").read_text().split())
        except OSError:
            continue
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def touch(values) -> float:
    """Read one value per 4 KiB page of a numpy array or tensor, as a consumer would."""
    flat = values.reshape(-1)
    step = max(PAGE // flat.element_size() if isinstance(flat, torch.Tensor)
               else PAGE // flat.itemsize, 1)
    return float(flat[::step].sum())


def plain_rate(blobs: list[bytes], scales: list[float], to_float32: bool) -> float:
    """Tiles/s of `np.load` from in-memory bytes (optionally to float32 times the scale)."""
    start = time.perf_counter()
    for blob, scale in zip(blobs, scales):
        array = np.load(io.BytesIO(blob))
        if to_float32:
            scaled = array.dtype == np.int16 and scale != 1.0
            array = array.astype(np.float32)
            if scaled:
                array *= np.float32(scale)
        touch(array)
    return len(blobs) / (time.perf_counter() - start)


def consume(batch) -> int:
    """Tiles in `batch`, after reading every page of its pixels."""
    touch(batch["image"])
    touch(batch["valid"])
    return batch["image"].shape[0]


def eval_rate(out: Path, batch_size: int, workers: int, tiles: int) -> float:
    """Tiles/s of one whole eval pass (worker start-up included); checks the tile count."""
    start, seen = time.perf_counter(), 0
    for batch in make_loader(out, mode="eval", batch_size=batch_size, num_workers=workers):
        seen += consume(batch)
    rate = seen / (time.perf_counter() - start)
    if seen != tiles:
        raise RuntimeError(f"eval pass gave {seen} tiles, expected {tiles}")
    return rate


def train_rates(out: Path, batch_size: int, workers: int, tiles: int, repeats: int,
                views: ViewConfig | None = None) -> tuple[list[float], float]:
    """(steady-state tiles/s of the infinite train stream over `repeats` back-to-back windows
    of `tiles` tiles, CPU ms per tile of main process + workers over those windows).

    Warm-up: start-up, first shard reads, and more batches than the DataLoader keeps queued,
    so that the clock never counts a batch made before it started.
    """
    if tiles % batch_size:
        raise ValueError(f"tiles ({tiles}) must be a multiple of the batch size ({batch_size})")
    stream = iter(make_loader(out, mode="train", batch_size=batch_size, num_workers=workers,
                              shuffle_buffer=16, views=views, prefetch_factor=PREFETCH))
    for _ in range((PREFETCH + 2) * max(workers, 1)):
        consume(next(stream))
    rates, cpu_start, total = [], cpu_seconds() + live_workers_cpu(), 0
    for _ in range(repeats):
        start, seen = time.perf_counter(), 0
        while seen < tiles:
            seen += consume(next(stream))
        rates.append(seen / (time.perf_counter() - start))
        total += seen
    cpu = (cpu_seconds() + live_workers_cpu() - cpu_start) * 1e3 / total
    return rates, cpu


def _median(values: list[float]) -> float:
    return statistics.median(values)


def measure(out: Path, args, tiles: int) -> dict[str, float]:
    """Median tiles/s of every variant, plain passes before and after the loader's."""
    blobs, scales = read_members(out)
    plain_rate(blobs, scales, True)  # warm-up: allocator, imports
    plain = [plain_rate(blobs, scales, True) for _ in range(args.repeats)]
    raw = [plain_rate(blobs, scales, False) for _ in range(args.repeats)]
    eval_rate(out, args.batch_size, args.workers, tiles)  # warm the page cache
    evals = [eval_rate(out, args.batch_size, args.workers, tiles) for _ in range(args.repeats)]
    train, cpu_train = train_rates(out, args.batch_size, args.workers, tiles, args.repeats)
    cpu_plain = cpu_ms_per_tile(lambda: plain_rate(blobs, scales, True), tiles)
    cpu_loader = cpu_ms_per_tile(lambda: eval_rate(out, args.batch_size, args.workers, tiles),
                                 tiles)
    views = ViewConfig(crop=96, flip=True, rotate=True, spectral="window", min_bands=64)
    viewed, _ = train_rates(out, args.batch_size, args.workers, tiles, 1, views)
    plain += [plain_rate(blobs, scales, True) for _ in range(args.repeats)]
    raw += [plain_rate(blobs, scales, False) for _ in range(args.repeats)]
    return {"plain": _median(plain), "raw": _median(raw), "eval": _median(evals),
            "train": _median(train), "views": _median(viewed),
            "cpu_plain": cpu_plain, "cpu_loader": cpu_loader, "cpu_train": cpu_train}


def report(r: dict[str, float], dtype: str) -> None:
    plain = r["plain"]
    print(f"plain np.load -> float32      : {plain:8.1f} tiles/s   (reference)")
    print(f"plain np.load, raw {dtype:<8}   : {r['raw']:8.1f} tiles/s   "
          f"ratio {r['raw'] / plain:.2f} (no conversion; for information)")
    print(f"loader train stream (steady) : {r['train']:8.1f} tiles/s   "
          f"ratio {r['train'] / plain:.2f}")
    print(f"loader eval pass (with start): {r['eval']:8.1f} tiles/s   "
          f"ratio {r['eval'] / plain:.2f}")
    print(f"loader train + views         : {r['views']:8.1f} tiles/s   "
          f"ratio {r['views'] / plain:.2f} (crop 96, flips, rotations, spectral window; "
          f"for information)")
    print(f"CPU time per tile            : plain {r['cpu_plain']:.1f} ms, loader train "
          f"stream {r['cpu_train']:.1f} ms, eval pass {r['cpu_loader']:.1f} ms (main + "
          f"workers; eval with start-up) (load-independent; for information)")
    met = r["train"] / plain >= TARGET
    print(f"target: train stream ratio >= {TARGET:.2f} of the plain read -> "
          f"{'met' if met else 'NOT met'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tiles (about a minute)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", choices=("float16", "int16"), default="float16")
    parser.add_argument("--repeats", type=int, default=None, help="passes per figure")
    parser.add_argument("--remote", action="store_true", help="shards from loopback HTTP and "
                        "S3 servers vs local, and shard writing from a remote GeoTIFF "
                        "(remote_io.py)")
    args = parser.parse_args(argv)
    if args.remote:
        from remote_io import run_remote  # sibling file: bench scripts run from bench/
        return run_remote(args, write_shards, eval_rate, train_rates)
    tiles, size, per_shard = (48, 128, 8) if args.quick else (160, 128, 16)
    args.repeats = args.repeats or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        out = Path(tmp)
        write_shards(out, tiles, size, per_shard, args.dtype)
        print(f"bench_loader: {tiles} tiles of 224 x {size} x {size} {args.dtype} in "
              f"{tiles // per_shard} shards, batch {args.batch_size}, {args.workers} workers, "
              f"median of {args.repeats} passes")
        results = measure(out, args, tiles)
    report(results, args.dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

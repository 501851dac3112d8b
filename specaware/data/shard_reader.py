"""Reading webdataset shards for the streaming loader (stream.py): tar members as zero-copy
views of the memory-mapped file, samples decoded lazily (pixels decoded once, straight into the
batch), and the accounting of skipped samples (docs/DESIGN.md section 1 "Streaming").

Robustness: unreadable shards, corrupt tar members, truncated shards (fewer samples than the
manifest says), incomplete and undecodable samples are skipped, counted per reason and logged
with shard and key (SkipStats); `SkipStats.check` raises SkipRateError past a rate.
"""
from __future__ import annotations

import io
import json
import logging
import mmap
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch

from specaware.data.codec import INT16_NODATA, decode_sample

log = logging.getLogger("specaware.data.stream")  # one logger for the whole loader
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

        Every step works in place on the slots (no full-size temporaries): this runs once per
        tile per epoch and is most of the loader's cost. Masks are computed with numpy, whose
        comparisons into bool arrays are several times faster than torch's on CPU; the common
        clean tile (no sentinel) is recognised from one reduction and skips them.
        """
        image.copy_(torch.from_numpy(self.raw))
        image_np, valid_np = image.numpy(), valid.numpy()
        if self.raw.dtype == np.int16:
            clean = int(self.raw.min()) > INT16_NODATA
            if not clean:
                np.not_equal(self.raw, INT16_NODATA, out=valid_np)
            if self.scale != 1.0:
                np.multiply(image_np, np.float32(self.scale), out=image_np)
            if self.offset != 0.0:
                np.add(image_np, np.float32(self.offset), out=image_np)
            if not clean:
                np.copyto(image_np, np.float32(0), where=~valid_np)  # sentinel pixels -> 0
        else:  # a sum is NaN/inf iff some element is, and far cheaper than an elementwise test
            clean = bool(torch.isfinite(image.sum()))
            if not clean:
                np.isfinite(image_np, out=valid_np)
                image.nan_to_num_(0.0, 0.0, 0.0)  # exactly the non-finite pixels become 0
        if clean:
            valid.fill_(True)
        for start, stop in _runs(~self.band_valid):  # absorption bands: a few contiguous ranges
            valid[start:stop] = False
            image[start:stop] = 0.0

    def materialize(self) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 [C, H, W], valid bool [C, H, W]) as numpy arrays."""
        image = torch.empty(self.shape, dtype=torch.float32)
        valid = torch.empty(self.shape, dtype=torch.bool)
        self.write_into(image, valid)
        return image.numpy(), valid.numpy()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


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
    """(shard paths, expected sample count per shard name) from a shard dir with manifest.json
    (local, or an s3:// / https:// prefix), a list of tar paths or URLs, or a brace pattern
    such as "data/shard-{000000..000009}.tar"."""
    urls, counts, _ = resolve_shard_set(source)
    return urls, counts


def resolve_shard_set(source) -> tuple[list[str], dict[str, int], int | None]:
    """`resolve_source` plus the tile size of a shard dir's manifest (None without one)."""
    from specaware.data import object_store

    counts: dict[str, int] = {}
    tile = None
    remote = object_store.is_store_url(source) and "{" not in source \
        and not source.endswith(".tar")  # an s3:// or https:// shard set
    if remote or isinstance(source, (str, Path)) and Path(source).is_dir():
        from specaware.data.shard import read_manifest
        manifest = read_manifest(source)
        counts = {s["name"]: int(s["count"]) for s in manifest["shards"]}
        urls = [object_store.join(source, s["name"]) if remote else str(Path(source) / s["name"])
                for s in manifest["shards"]]
        tile = manifest.get("tile") if isinstance(manifest.get("tile"), int) else None
    elif isinstance(source, (str, Path)):
        urls = list(braceexpand.braceexpand(str(source)))
    else:
        urls = [str(u) for u in source]
    if not urls:
        raise ValueError(f"no shards found in {source!r}")
    return urls, counts, tile


def require_shard_files(key: str, source, how: str = "") -> list[str]:
    """The shard paths of config value `source` (see `resolve_source`), or a ConfigError naming
    the config `key`, the missing files and `how` to make shards; for checking a run's data
    before anything expensive starts."""
    from specaware.config import ConfigError

    try:
        urls, _ = resolve_source(source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"config key {key!r} = {source!r}: {e}") from None
    try:
        missing = missing_shards(urls)
    except OSError as e:  # remote: denied, no credentials, no response
        raise ConfigError(f"config key {key!r} = {source!r}: {e}") from None
    if missing:
        raise ConfigError(f"config key {key!r} = {source!r}: {len(missing)} of {len(urls)} "
                          f"shard(s) not found, e.g. {missing[:3]}" + (f"; {how}" if how else ""))
    return urls


class _CutMember(EOFError):
    """A member that runs past the end of a truncated file; `key` is its sample's key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def missing_shards(urls: list[str]) -> list[str]:
    """The shard paths or URLs that are not there (remote ones checked with HEAD requests)."""
    from specaware.data import object_store

    remote = [u for u in urls if object_store.is_store_url(u)]
    return [u for u in urls if not object_store.is_store_url(u) and not Path(u).is_file()] + \
        (object_store.missing(remote) if remote else [])


def _members(path: str) -> Iterator[tuple[str, str, int, int, mmap.mmap]]:
    """(key, extension, offset, size, buffer) of each regular member, in tar order."""
    with open(path, "rb") as handle:
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        end = len(buffer)
        with tarfile.open(fileobj=handle, mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, _, ext = Path(info.name).name.partition(".")
                if info.offset_data + info.size > end:
                    raise _CutMember(key, f"member {info.name} ends at byte "
                                     f"{info.offset_data + info.size}, beyond the file end {end}")
                yield key, ext.lower(), info.offset_data, info.size, buffer


def read_shard(path: str, stats: SkipStats, expected: int | None = None,
               members: Iterable[tuple] | None = None) -> Iterator[dict[str, Any]]:
    """Samples {"__key__", "__url__", "npy": array view, "json": bytes} of one tar shard.

    Members of one key are consecutive (the shard writer guarantees it). A sample with a
    missing or corrupt member is yielded with "__broken__" (the reason), for the decode stage to
    count; an unreadable or truncated tar (fewer samples than `expected`) is counted here.
    `members`: the members of a shard already requested (tar_stream.read_ahead), else they
    are read here (a local file memory-mapped, a remote one streamed).
    """
    name, current, produced = Path(path).name, None, 0

    def finish(sample):
        nonlocal produced
        produced += 1
        missing = sorted({"npy", "json"} - set(sample))
        if missing and "__broken__" not in sample:
            sample["__broken__"] = f"incomplete sample: no .{missing[0]} member"
        return sample

    from specaware.data import object_store, tar_stream

    if members is None:
        members = (tar_stream.stream_members if object_store.is_store_url(path)
                   else _members)(path)
    try:
        for key, ext, offset, size, buffer in members:
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
        if isinstance(err, _CutMember) and current is not None and err.key != current["__key__"]:
            yield finish(current)   # the cut is in the next sample: this one is whole
            current = None
        # a partial sample at the break is lost with the rest of the shard
        lost = max((expected or 0) - produced, 1)
        stats.skip("truncated or unreadable shard", name, current["__key__"] if current else "-",
                   f"{type(err).__name__}: {err}", count=lost)
        return
    if current is not None:
        yield finish(current)
    if expected is not None and produced < expected:
        stats.skip("truncated shard", name, "-", f"{produced} of {expected} samples in the "
                   f"manifest", count=expected - produced)

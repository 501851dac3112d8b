"""Summary of a shard set (the library half of `specaware inspect`, specaware/cli/inspect.py),
in a local folder or under an s3:// / https:// prefix (docs/DATA_IN_THE_CLOUD.md).

Counts per sensor and band count, shard sizes (checked against the tar contents),
the tiling report, descriptor strata, and, from a decoded sample of tiles, the invalid
fraction and value range, plus a few sample keys. Problems (exit code 1) are what training
would skip or choke on: unreadable or short shards, samples that do not decode, bad band
metadata (NaN gsd/FWHM, gsd <= 0, implausible or repeated wavelengths, 0 bands), off-size tiles,
NaN/inf pixels marked valid and values large enough to overflow a loss. It never crashes on a
malformed header: that is a problem line naming the sample.
"""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from specaware.data.codec import SampleDecodeError, decode_sample

STRATA_KEYS = ("landcover", "climate_zone")


def _tar_members(path: Path | str, keep: int | None
                 ) -> tuple[int | None, list[tuple[str, dict[str, bytes]]], str | None]:
    """(sample count, (key, payloads {ext: bytes}) of the first `keep` samples (None = all),
    error) of a shard; only the kept payloads are read (a remote shard is streamed once,
    nothing stored), so a large set is listed, not loaded."""
    from specaware.data.object_store import is_store_url

    keys: set[str] = set()
    payloads: dict[str, dict[str, bytes]] = {}
    if is_store_url(path):
        from specaware.data.tar_stream import stream_members
        members = ((key, ext, lambda p=payload: p.tobytes())
                   for key, ext, _, _, payload in stream_members(path))
    else:
        members = _local_members(Path(path))
    try:
        for key, ext, read in members:
            keys.add(key)
            if key in payloads or keep is None or len(payloads) < keep:
                payloads.setdefault(key, {})[ext] = read()
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        return None, list(payloads.items()), f"{Path(str(path)).name}: {err}"
    return len(keys), list(payloads.items()), None


def _local_members(path: Path):
    """(key, extension, read()) of each regular member of a local tar."""
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                key, _, ext = Path(member.name).name.partition(".")
                yield key, ext, lambda m=member: tar.extractfile(m).read()


# values far beyond reflectance (~0-1) or radiance (~0-1000): a loss over them overflows
EXTREME_VALUE = 1e6


def _decode_one(key: str, members: dict[str, bytes], tile: int | None
                ) -> tuple[dict | None, str | None]:
    """(decoded sample with its `band_valid` [C], None) or (None, the reason it would be
    skipped in training, naming the key)."""
    try:
        s = decode_sample(members.get("npy", b""), members.get("json", b"{}"), key)
        header = json.loads(members["json"])
    except Exception as err:  # noqa: BLE001 - inspect reports every broken sample, never crashes
        return None, str(err) if isinstance(err, SampleDecodeError) else \
            f"sample '{key}': {type(err).__name__}: {err}"
    s["band_valid"] = np.asarray(header["band_valid"], dtype=bool)
    h, w = s["image"].shape[1:]
    if tile and (h, w) != (tile, tile):
        return None, (f"sample '{s['meta']['key']}': {h}x{w} tile in a shard set of "
                      f"{tile}x{tile} tiles (skipped in training)")
    return s, None


def _decode_stats(samples: list[tuple[str, dict[str, bytes]]], limit: int,
                  tile: int | None = None) -> dict[str, Any]:
    """Invalid fraction over the signal bands (band_valid True), share of flagged bands, value
    range, non-finite and extreme values among valid pixels of up to `limit` decoded samples,
    and the samples training would skip (with the reason, naming the key)."""
    invalid, flagged, low, high, broken = [], [], np.inf, -np.inf, []
    nonfinite, extreme = [], []
    for key, members in samples[:limit or None]:
        s, problem = _decode_one(key, members, tile)
        if s is None:
            broken.append(problem)
            continue
        band_valid = s["band_valid"]
        signal = s["valid"][band_valid]
        invalid.append(1.0 - float(signal.mean()) if signal.size else 1.0)
        flagged.append(1.0 - float(band_valid.mean()))
        values = s["image"][s["valid"]]
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            nonfinite.append(f"sample '{s['meta']['key']}': {bad} NaN/inf pixels marked valid")
        values = values[np.isfinite(values)]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
            peak = float(np.abs(values).max())
            if peak > EXTREME_VALUE:
                extreme.append(f"sample '{s['meta']['key']}': valid values up to {peak:.3g}, "
                               f"far beyond reflectance or radiance (a loss over them overflows)")
    return {"decoded": len(invalid), "broken": broken, "nonfinite": nonfinite,
            "extreme": extreme,
            "invalid_fraction_mean": float(np.mean(invalid)) if invalid else None,
            "flagged_band_fraction_mean": float(np.mean(flagged)) if flagged else None,
            "value_range": [low, high] if invalid and np.isfinite(low) else None}


def summarise(shard_dir, samples: int = 64, keys: int = 5) -> dict[str, Any]:
    """Summary dict of the shard set in `shard_dir` (see the module docstring)."""
    from specaware.data.object_store import is_store_url, join
    from specaware.data.shard import read_manifest

    remote = is_store_url(shard_dir)  # an s3:// or https:// prefix: shards are streamed
    shard_dir = str(shard_dir) if remote else Path(shard_dir)
    manifest = read_manifest(shard_dir)
    shards, errors, decoded_pool = [], [], []
    for entry in manifest["shards"]:
        want = None if not samples else max(samples - len(decoded_pool), 0)
        where = join(shard_dir, entry["name"]) if remote else shard_dir / entry["name"]
        found, members, error = _tar_members(where, want)
        if error:
            errors.append(error)
        shards.append({"name": entry["name"], "count": entry["count"], "found": found})
        decoded_pool += members
    tiles = manifest.get("tiles", [])
    strata = {k: dict(Counter(str(_descriptors(t).get(k)) for t in tiles))
              for k in STRATA_KEYS if any(k in _descriptors(t) for t in tiles)}
    tile = manifest.get("tile") if isinstance(manifest.get("tile"), int) else None
    return {
        "dir": str(shard_dir), "total": manifest["total"], "sensors": manifest["sensors"],
        "band_counts": manifest["band_counts"], "bounds": manifest.get("bounds"),
        "tile": manifest.get("tile"), "dtype": manifest.get("dtype"),
        "report": {k: v for k, v in manifest.get("report", {}).items() if k != "scenes"},
        "shards": shards, "shard_errors": errors,
        "mismatched_shards": [s["name"] for s in shards
                              if s["found"] is not None and s["found"] != s["count"]],
        "strata": strata, "keys": [t["key"] for t in tiles[:keys]],
        "decoded": _decode_stats(decoded_pool, samples, tile),
    }


def _descriptors(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("descriptors")
    return value if isinstance(value, dict) else {}


def problems(s: dict[str, Any]) -> list[str]:
    """One line per unreadable shard, count mismatch or sample training would skip or choke on."""
    out = list(s["shard_errors"])
    out += [f"{n}: manifest count differs from the tar contents"
            for n in s["mismatched_shards"]]
    out += s["decoded"]["broken"] + s["decoded"]["nonfinite"] + s["decoded"]["extreme"]
    return out


def curation_report(shard_dir, balance: list[str], min_entropy: float | None,
                    drop_quantile: float | None, max_oversample: float = 10.0
                    ) -> dict[str, Any] | None:
    """What `data/curate.py` would do to the tiles of `shard_dir`, or None when nothing is
    asked (no balance descriptors, no entropy limit, no drop quantile)."""
    if not balance and min_entropy is None and not drop_quantile:
        return None
    from specaware.data.curate import curate
    from specaware.data.shard import read_manifest

    return curate(read_manifest(shard_dir)["tiles"], balance, min_entropy, drop_quantile,
                  max_oversample).report

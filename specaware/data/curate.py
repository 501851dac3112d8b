"""Thematic/climatic curation of a shard set (docs/DESIGN.md section 1 "Curation").

CSMoE (arXiv 2509.14104) builds its pretraining set by stratified sampling over thematic
(land-cover) and climatic (Koppen zone) descriptors, so rare combinations are not drowned by
common ones. This module generalises that to any per-tile descriptors of the manifest
(`descriptors.py` writes landcover, climate_zone, entropy, mean_reflectance, latitude; user
descriptors from `specaware shard --descriptors` or SPECAWARE_* tags join them) and the row
fields `sensor` and `bands`. It reads the manifest only; no pixels.

Two steps, in this order:
1. pruning: tiles with little information are removed, by their `entropy` descriptor (bits):
   below `min_entropy`, and/or the `drop_quantile` fraction with the lowest entropy (rank
   based, so exactly round(q * N) tiles go; ties keep manifest order).
2. balancing: the kept tiles are grouped into strata, the joint values of the `balance` fields
   (e.g. landcover x climate_zone x sensor). Every stratum gets the same share of the draws,
   except that no stratum is drawn more than `max_oversample` times as often as its natural
   share (a stratum of 3 tiles would otherwise repeat them endlessly); what the cap frees is
   shared equally by the others ("water filling"). Numeric descriptors are binned into
   quantiles with "name:N" (e.g. "mean_reflectance:4").

Weights: tile weight = share of its stratum / tiles in it, scaled to a mean of 1, so a weight
reads as "drawn this many times more often than in a uniform draw". `make_loader(...,
keys=, weights=)` consumes them (stream.py).

    keys, weights = curation_for("shards/", balance=("landcover", "climate_zone"),
                                 drop_quantile=0.05)
    loader = make_loader("shards/", mode="train", batch_size=8, keys=keys, weights=weights)
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
ROW_FIELDS = ("sensor", "bands")   # manifest row fields usable as strata besides descriptors
MISSING = "missing"                # stratum value of a tile that lacks the field
MAX_CATEGORIES = 50                # more distinct numeric values than this need "name:N" bins


class CurationError(ValueError):
    """Bad curation settings or a manifest without the needed descriptors (message says which)."""


@dataclass
class Curation:
    """Result of `curate`: keys to keep (None = all), weights (None = uniform), report."""
    keys: list[str] | None
    weights: dict[str, float] | None
    report: dict[str, Any]


# --------------------------------------------------------------------------- fields

def _field_value(row: dict[str, Any], name: str) -> Any:
    if name in ROW_FIELDS:
        return row.get(name, MISSING)
    return (row.get("descriptors") or {}).get(name, MISSING)


def available_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Names usable in `balance`: row fields plus every descriptor found in some row."""
    found = {k for r in rows for k in (r.get("descriptors") or {})}
    return sorted(found | {f for f in ROW_FIELDS if any(f in r for r in rows)})


def _parse_field(spec: str) -> tuple[str, int | None]:
    """"name" -> (name, None); "name:N" -> (name, N quantile bins)."""
    name, _, bins = str(spec).partition(":")
    if not bins:
        return name, None
    if not bins.isdigit() or int(bins) < 2:
        raise CurationError(f"curation: balance field {spec!r}: the part after ':' must be a "
                            f"number of quantile bins >= 2 (e.g. 'mean_reflectance:4')")
    return name, int(bins)


def _quantile_labels(values: list[Any], name: str, bins: int) -> list[str]:
    """Quantile-bin labels "lo..hi" for numeric `values` (MISSING stays MISSING)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) + values.count(MISSING) != len(values):
        bad = next(v for v in values if v != MISSING and v not in numbers)
        raise CurationError(f"curation: '{name}:{bins}' bins numbers, but tiles have {bad!r}")
    if not numbers:
        return list(values)
    edges = np.unique(np.quantile(np.asarray(numbers, dtype=np.float64),
                                  np.linspace(0, 1, bins + 1)))
    labels = [f"{lo:.4g}..{hi:.4g}" for lo, hi in zip(edges[:-1], edges[1:])] or [
        f"{edges[0]:.4g}"]

    def label(v) -> str:
        return labels[min(int(np.searchsorted(edges[1:-1], v, side="right")), len(labels) - 1)]
    return [MISSING if v == MISSING else label(v) for v in values]


def _column(rows: Sequence[dict[str, Any]], spec: str) -> list[Any]:
    """Stratum value of every row for one balance field; unknown names fail with the list."""
    name, bins = _parse_field(spec)
    values = [_field_value(r, name) for r in rows]
    if rows and all(v == MISSING for v in values):
        raise CurationError(
            f"curation: unknown descriptor {name!r} in balance; this manifest has "
            f"{', '.join(available_fields(rows)) or 'no descriptors'}. Pick one of those, or "
            f"add it when sharding (`specaware shard --descriptors`, SPECAWARE_* tags).")
    if bins is not None:
        return _quantile_labels(values, name, bins)
    distinct = {v for v in values if isinstance(v, float)}
    if len(distinct) > MAX_CATEGORIES:
        raise CurationError(f"curation: descriptor {name!r} is continuous ({len(distinct)} "
                            f"distinct values); bin it, e.g. balance '{name}:4'")
    return values


def strata_of(rows: Sequence[dict[str, Any]], balance: Sequence[str]) -> list[tuple]:
    """The stratum (tuple of field values, in `balance` order) of every row."""
    columns = [_column(rows, spec) for spec in balance]
    return [tuple(str(c[i]) for c in columns) for i in range(len(rows))]


# --------------------------------------------------------------------------- pruning

def low_entropy_mask(rows: Sequence[dict[str, Any]], min_entropy: float | None = None,
                     drop_quantile: float | None = None) -> tuple[np.ndarray, float | None]:
    """(bool [N] True = remove, highest entropy removed or None) from the `entropy`
    descriptor: below `min_entropy` bits, and the lowest `drop_quantile` fraction."""
    remove = np.zeros(len(rows), dtype=bool)
    if min_entropy is None and not drop_quantile:
        return remove, None
    if drop_quantile is not None and not 0.0 <= drop_quantile < 1.0:
        raise CurationError(f"curation: drop_quantile must be in [0, 1), got {drop_quantile}")
    entropy = [_field_value(r, "entropy") for r in rows]
    lacking = [r.get("key", "?") for r, e in zip(rows, entropy) if e == MISSING]
    if lacking:
        raise CurationError(
            f"curation: {len(lacking)} tile(s) have no 'entropy' descriptor (e.g. "
            f"{lacking[:3]}); entropy pruning needs shards written by `specaware shard`, which "
            f"computes it per tile. Re-shard, or leave min_entropy/drop_quantile unset.")
    entropy = np.asarray(entropy, dtype=np.float64)
    if min_entropy is not None:
        remove |= entropy < float(min_entropy)
    if drop_quantile:
        order = np.argsort(entropy, kind="stable")
        remove[order[:int(round(drop_quantile * len(rows)))]] = True
    return remove, float(entropy[remove].max()) if remove.any() else None


# --------------------------------------------------------------------------- balancing

def balanced_shares(counts: Sequence[int], max_oversample: float = 10.0) -> np.ndarray:
    """Draw share of each stratum (sums to 1): equal shares, capped at `max_oversample` times
    the natural share counts / sum(counts); the capped excess goes equally to the others."""
    if max_oversample < 1.0:
        raise CurationError(f"curation: max_oversample must be >= 1 (1 = natural frequencies), "
                            f"got {max_oversample}")
    natural = np.asarray(counts, dtype=np.float64) / float(np.sum(counts))
    cap = max_oversample * natural
    capped = np.zeros(len(natural), dtype=bool)
    while True:  # each round caps at least one more stratum, or stops
        level = (1.0 - cap[capped].sum()) / max((~capped).sum(), 1)
        newly = ~capped & (cap < level)
        if not newly.any():
            break
        capped |= newly
    return np.where(capped, cap, level)


def _stratum_rows(before, kept, shares, names) -> list[dict[str, Any]]:
    total_kept = sum(kept.values())
    out = []
    for (stratum, share) in sorted(shares.items(), key=lambda kv: -before[kv[0]]):
        natural = kept[stratum] / total_kept if total_kept else 0.0
        out.append({"stratum": dict(zip(names, stratum)), "tiles": before[stratum],
                    "kept": kept[stratum], "natural_share": round(natural, 6),
                    "share": round(share, 6),
                    "oversample": round(share / natural, 4) if natural else 0.0})
    return out


def curate(rows: Sequence[dict[str, Any]], balance: Sequence[str] = (),
           min_entropy: float | None = None, drop_quantile: float | None = None,
           max_oversample: float = 10.0) -> Curation:
    """Prune and balance manifest rows (see the module docstring) -> Curation."""
    if isinstance(balance, str):
        balance = [b for b in balance.split(",") if b.strip()]
    balance = [b.strip() for b in balance]
    if not rows:
        raise CurationError("curation: the manifest lists no tiles")
    remove, threshold = low_entropy_mask(rows, min_entropy, drop_quantile)
    strata = strata_of(rows, balance) if balance else [()] * len(rows)
    before = Counter(strata)
    kept = Counter(s for s, r in zip(strata, remove) if not r)
    if not kept:
        raise CurationError(f"curation: entropy pruning (min_entropy={min_entropy}, "
                            f"drop_quantile={drop_quantile}) removed all {len(rows)} tiles")
    names = [_parse_field(b)[0] for b in balance]
    order = list(kept)
    shares = dict(zip(order, balanced_shares([kept[s] for s in order], max_oversample)))
    keys = [str(r["key"]) for r, gone in zip(rows, remove) if not gone]
    weights = None
    if balance:
        n_kept = len(keys)
        weights = {str(r["key"]): float(shares[s] / kept[s] * n_kept)
                   for r, s, gone in zip(rows, strata, remove) if not gone}
    report = {"tiles": len(rows), "kept": len(keys), "removed_low_entropy": int(remove.sum()),
              "entropy_removed_up_to": threshold, "min_entropy": min_entropy,
              "drop_quantile": drop_quantile, "balance": list(balance),
              "max_oversample": max_oversample,
              "strata": _stratum_rows(before, kept, shares, names),
              "removed_strata": [dict(zip(names, s)) for s in before if s not in kept]}
    return Curation(keys if remove.any() else None, weights, report)


def format_report(report: dict[str, Any], limit: int = 20) -> list[str]:
    """Human-readable lines of a curation report (counts per stratum before/after)."""
    lines = [f"curation: kept {report['kept']} of {report['tiles']} tiles, removed "
             f"{report['removed_low_entropy']} low-entropy"
             + (f" (entropy <= {report['entropy_removed_up_to']:.3g} bits)"
                if report["entropy_removed_up_to"] is not None else "")]
    if report["balance"]:
        lines.append(f"balance over {' x '.join(report['balance'])}: {len(report['strata'])} "
                     f"strata, max oversample {report['max_oversample']:g}")
        for s in report["strata"][:limit]:
            name = " / ".join(f"{v}" for v in s["stratum"].values())
            lines.append(f"  {name:<40} tiles {s['tiles']:>7} kept {s['kept']:>7}  share "
                         f"{s['natural_share']:6.1%} -> {s['share']:6.1%} (x{s['oversample']:.2f})")
        if len(report["strata"]) > limit:
            lines.append(f"  ... {len(report['strata']) - limit} more strata")
    for gone in report["removed_strata"]:
        lines.append(f"  stratum {gone} lost every tile to entropy pruning")
    return lines


def curation_for(shards_dir, balance: Sequence[str] = (), min_entropy: float | None = None,
                 drop_quantile: float | None = None, max_oversample: float = 10.0,
                 ) -> tuple[list[str] | None, dict[str, float] | None]:
    """(keys | None, weights | None) for `make_loader(shards_dir, keys=, weights=)`, from the
    manifest of `shards_dir`; the report is logged. Both None = no curation asked."""
    from specaware.data.shard import read_manifest

    if not balance and min_entropy is None and not drop_quantile:
        return None, None
    result = curate(read_manifest(shards_dir)["tiles"], balance, min_entropy, drop_quantile,
                    max_oversample)
    for line in format_report(result.report):
        log.info("%s: %s", shards_dir, line)
    return result.keys, result.weights

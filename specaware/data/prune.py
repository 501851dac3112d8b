"""Training-free pruning of a shard set: entropy filter, scene-aware k-means, per-cluster quotas.

After "training-free data pruning for remote-sensing foundation models" (arXiv 2512.23239):
1. the per-tile entropy filter of `curate.low_entropy_mask` (min_entropy / drop_quantile) drops
   tiles with little information;
2. the rest are clustered (k-means, k-means++ init, fixed seed) on a cheap spectral-spatial
   descriptor read from the pixels (`tile_descriptor`), or on a pretrained encoder's pooled
   features when a checkpoint is given (`encoder_features`);
3. a target `fraction` of the manifest's tiles is kept with per-cluster quotas: the budget is
   shared equally among clusters and a cluster smaller than its share is kept whole (water
   filling), so rare scenes survive and big redundant ones shrink; every cluster keeps >= 1;
4. inside a cluster, farthest-point order from the tile nearest the centre: near-duplicates come
   last and so are the first to go.

The result (KEYS.json, `specaware curate`) is read by pretraining as `data.curation.keys_file`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from specaware.data.curate import CurationError, low_entropy_mask

log = logging.getLogger(__name__)
GRID_NM = np.linspace(420.0, 2450.0, 12)     # descriptor grid, band centres in nm


def tile_descriptor(image: np.ndarray, valid: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
    """[3 G] of one tile image [C, H, W] (valid bool, same shape; wavelength [C] nm): the mean
    spectrum, the spatial std and the mean absolute gradient per band, each interpolated onto
    GRID_NM (G=12), so tiles of any sensor compare."""
    good = valid.reshape(valid.shape[0], -1).mean(1) > 0.5
    if good.sum() < 2:
        return np.zeros(3 * len(GRID_NM), np.float32)
    x = np.where(valid, image, np.nan)[good]
    wl = np.asarray(wavelength, np.float64)[good]
    mean = np.nanmean(x, axis=(1, 2))
    std = np.nanstd(x, axis=(1, 2))
    grad = np.nanmean(np.abs(np.diff(x, axis=2)), axis=(1, 2))
    order = np.argsort(wl)
    parts = [np.interp(GRID_NM, wl[order], np.nan_to_num(v[order])) for v in (mean, std, grad)]
    return np.concatenate(parts).astype(np.float32)


def read_tiles(shards_dir, describe: Callable[[dict], np.ndarray]) -> dict[str, np.ndarray]:
    """key -> describe(sample) over every readable sample of a shard folder; unreadable samples
    are counted and logged (shard_reader's SkipStats), never silently dropped."""
    from specaware.data.shard_reader import SkipStats, decode_eager, read_shard, resolve_source
    urls, counts = resolve_source(str(shards_dir))
    stats, out = SkipStats(), {}
    for url in urls:
        for raw in read_shard(url, stats, counts.get(Path(url).name)):
            key = raw["__key__"]
            if "__broken__" in raw:
                stats.skip("broken", url, key, raw["__broken__"])
                continue
            try:
                out[key] = describe(decode_eager(raw, key))
            except Exception as err:  # noqa: BLE001 - a bad sample is counted, not fatal
                stats.skip("undecodable", url, key, err)
    if stats.total_skipped:
        log.warning("prune: skipped %d unreadable samples: %s", stats.total_skipped,
                    stats.as_dict())
    return out


def descriptor_of(sample: dict) -> np.ndarray:
    return tile_descriptor(sample["image"], sample["valid"], np.asarray(sample["wavelength"]))


def encoder_features(checkpoint: str) -> Callable[[dict], np.ndarray]:
    """describe(sample) -> [d]: the mean of the pretrained encoder's patch tokens."""
    import torch

    from specaware.data.collate import collate
    from specaware.finetune.api import load_pretrained
    encoder = load_pretrained(checkpoint).eval()

    @torch.no_grad()
    def describe(sample: dict) -> np.ndarray:
        tokens = encoder.forward_features(collate([sample]))          # [1, n, d]
        return tokens.mean(dim=1)[0].float().numpy()
    return describe


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N], centres [k, D]) of Lloyd's k-means with k-means++ seeding; deterministic for
    a seed. Empty clusters are re-seeded at the point farthest from its centre."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
    c = np.array(centres, np.float64)
    for _ in range(iters):
        d2 = ((x[:, None] - c[None]) ** 2).sum(-1)
        labels = d2.argmin(1)
        new = np.array([x[labels == j].mean(0) if (labels == j).any()
                        else x[d2.min(1).argmax()] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1), c


def quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Per-cluster keep counts summing to `budget`: equal shares, a cluster smaller than its
    share kept whole and the rest shared again (water filling); each cluster >= 1."""
    if budget < len(sizes):
        raise CurationError(f"prune: keeping {budget} tiles cannot keep all {len(sizes)} "
                            "clusters; raise the fraction or lower the number of clusters")
    take = np.zeros(len(sizes), np.int64)
    left = budget
    while left > 0:
        open_ = np.flatnonzero(take < sizes)
        if len(open_) == 0:
            break
        share = max(1, left // len(open_))
        for j in open_[np.argsort(sizes[open_] - take[open_], kind="stable")]:
            add = min(share, sizes[j] - take[j], left)
            take[j] += add
            left -= add
    return take


def farthest_order(x: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Order of the rows of x [n, D]: the one nearest `centre` first, then each next the one
    farthest from all chosen, so near-duplicates come last."""
    order = [int(((x - centre) ** 2).sum(1).argmin())]
    dist = ((x - x[order[0]]) ** 2).sum(1)
    dist[order[0]] = -1.0
    for _ in range(1, len(x)):
        j = int(dist.argmax())
        order.append(j)
        dist = np.minimum(dist, ((x - x[j]) ** 2).sum(1))
        dist[order] = -1.0          # chosen rows never again, even among exact duplicates
    return np.array(order, np.int64)


def prune(rows: list[dict[str, Any]], features: dict[str, np.ndarray], fraction: float,
          clusters: int = 8, seed: int = 0, min_entropy: float | None = None,
          drop_quantile: float | None = None) -> dict[str, Any]:
    """{"keys": kept keys in manifest order, "report": {...}} keeping round(fraction * N) of the
    N manifest `rows` (module docstring); `features` maps key -> descriptor [D]."""
    if not 0.0 < fraction <= 1.0:
        raise CurationError(f"prune: fraction must be in (0, 1], got {fraction}")
    removed, threshold = low_entropy_mask(rows, min_entropy, drop_quantile)
    keys = [str(r["key"]) for r, gone in zip(rows, removed) if not gone]
    missing = [k for k in keys if k not in features]
    if missing:
        log.warning("prune: %d manifest tiles were unreadable and are dropped (first: %s)",
                    len(missing), missing[0])
        keys = [k for k in keys if k in features]
    budget = min(len(keys), int(round(fraction * len(rows))))
    x = np.stack([features[k] for k in keys]).astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)      # each descriptor dimension on one scale
    k = min(clusters, len(keys))
    labels, centres = kmeans(x, k, seed)
    sizes = np.bincount(labels, minlength=k)
    take = quotas(sizes, budget)
    kept: set[str] = set()
    for j in range(k):
        members = np.flatnonzero(labels == j)
        order = farthest_order(x[members], centres[j])
        kept.update(keys[i] for i in members[order[:take[j]]])
    ordered = [str(r["key"]) for r in rows if str(r["key"]) in kept]
    report = {"tiles": len(rows), "kept": len(ordered), "fraction": fraction, "seed": seed,
              "removed_low_entropy": int(removed.sum()), "entropy_removed_up_to": threshold,
              "clusters": [{"cluster": j, "tiles": int(sizes[j]), "kept": int(take[j])}
                           for j in range(k)]}
    return {"keys": ordered, "report": report}


def prune_shards(shards_dir, out: str | Path, fraction: float = 0.5, clusters: int = 8,
                 seed: int = 0, checkpoint: str = "", min_entropy: float | None = None,
                 drop_quantile: float | None = None) -> dict[str, Any]:
    """Prune a shard folder (descriptors, or `checkpoint`'s pooled features) -> KEYS.json."""
    from specaware.data.shard import read_manifest
    rows = read_manifest(shards_dir)["tiles"]
    describe = encoder_features(checkpoint) if checkpoint else descriptor_of
    result = prune(rows, read_tiles(shards_dir, describe), fraction, clusters, seed,
                   min_entropy, drop_quantile)
    result["report"].update({"shards": str(shards_dir), "features":
                             f"encoder {checkpoint}" if checkpoint else "spectral-spatial"})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    return result


def read_keys_file(path: str | Path) -> list[str]:
    """The kept keys of a KEYS.json written by `specaware curate` (data.curation.keys_file)."""
    try:
        keys = json.loads(Path(path).read_text())["keys"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CurationError(f"data.curation.keys_file={path}: not a KEYS.json written by "
                            f"`specaware curate` ({e}); rerun specaware curate SHARDS --out "
                            f"{path}") from None
    return [str(k) for k in keys]


def restrict_to_keys_file(path, keys: list[str] | None, weights: dict[str, float] | None
                          ) -> tuple[list[str], dict[str, float] | None]:
    """(keys, weights) of the other curation settings narrowed to the tiles of KEYS.json."""
    chosen = read_keys_file(path)
    if keys is not None:
        allowed = set(keys)
        chosen = [k for k in chosen if k in allowed]
    if not chosen:
        raise CurationError(f"data.curation.keys_file={path}: no tile left after the other "
                            "curation settings; rerun specaware curate on these shards")
    if weights is not None:
        weights = {k: weights[k] for k in chosen if k in weights}
    log.info("data.curation.keys_file=%s: %d tiles", path, len(chosen))
    return chosen, weights

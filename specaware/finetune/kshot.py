"""k-shot protocols: exactly k labelled samples per class, over fixed seeds, for several methods.

Few-shot remote-sensing benchmarks (arXiv 2510.07135, 2510.24321) report 1/2/4/8/16 shots per
class, averaged over fixed seeds, and compare a linear probe with prompt tuning and full
fine-tuning. Hyperspectral papers report 5/10/20/50 labelled pixels per class (the .mat configs'
`protocol.shots`). One command runs the grid and prints one table of mean ± std per shot count:

    specaware finetune configs/finetune/indian_pines.yaml protocol.shots=[5,10,20,50] \\
        protocol.methods=[linear,prompt,full]

`protocol.split=kshot` is the split of one grid cell: train holds exactly `per_class` samples of
every class, validation at most `val_per_class` (default k) of what is left, test the rest, so
train and test never share a pixel or tile. A class with <= k samples is an error naming it:
a silently smaller class would make the "k-shot" number a lie.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np

from specaware.config import ConfigError

log = logging.getLogger(__name__)
# method -> (model.freeze, prompt tokens): linear probe and prompt tuning keep the encoder frozen
METHODS = {"linear": "encoder", "prompt": "encoder", "full": "none"}


def kshot_indices(labels: np.ndarray, seed: int, k: int,
                  val_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) into `labels` [N] (< 0 = unlabelled, ignored): exactly k per
    class train, min(val, n - k - 1) per class validation, >= 1 per class test."""
    if k < 1:
        raise ConfigError(f"config key 'protocol.per_class': k-shot needs k >= 1, got {k}")
    val = k if val_per_class is None else val_per_class
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for cls in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if len(idx) <= k:
            raise ConfigError(f"k-shot k={k}: class {int(cls)} has only {len(idx)} labelled "
                              f"samples (needs >= {k + 1}: k to train, 1 to test); lower "
                              "protocol.shots or drop the class")
        n_val = max(0, min(val, len(idx) - k - 1))
        parts[0].append(idx[:k])
        parts[1].append(idx[k:k + n_val])
        parts[2].append(idx[k + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def kshot_pixels(labels: np.ndarray, seed: int, k: int, val_per_class: int | None = None):
    """`protocol.Split` of a [H, W] label map (-1 = unlabelled) with exactly k pixels per class."""
    from specaware.finetune.datasets.protocol import Split
    flat = labels.reshape(-1)
    W = labels.shape[1]
    idx = kshot_indices(flat, seed, k, val_per_class)
    coords = [np.stack([i // W, i % W], axis=1).astype(np.int64) for i in idx]
    return Split(*coords)


def method_model(model_cfg, method: str):
    """A copy of `model_cfg` (ModelConfig) set up for `method`: its freeze, and prompt tokens
    (model.prompts, or 8) for prompt tuning only. Shared by the k-shot grid and the closed
    active-learning loop (active_train.py)."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not one of {sorted(METHODS)}")
    m = copy.deepcopy(model_cfg)
    m.freeze = METHODS[method]
    m.prompts = (model_cfg.prompts or 8) if method == "prompt" else 0
    return m


def shot_configs(cfg) -> list[tuple[int, str, object]]:
    """(k, method, config) per grid cell: split=kshot, per_class=k, the method's freeze and
    prompt tokens, out=OUT/shot<k>/<method>."""
    p = cfg.protocol
    unknown = [m for m in p.methods if m not in METHODS]
    if unknown or not p.methods:
        raise ConfigError(f"config key 'protocol.methods': {unknown or p.methods} not among "
                          f"{sorted(METHODS)}")
    if "prompt" in p.methods and cfg.task != "classification":
        raise ConfigError("protocol.methods=prompt: prompt tuning is implemented for "
                          f"task=classification only, not task={cfg.task}")
    cells = []
    for k in p.shots:
        for method in p.methods:
            c = copy.deepcopy(cfg)
            c.protocol.shots, c.protocol.split = [], "kshot"
            c.protocol.per_class, c.protocol.fraction = int(k), None
            c.model = method_model(cfg.model, method)
            c.out = str(Path(cfg.out) / f"shot{k}" / method)
            cells.append((int(k), method, c))
    return cells


def run_shots(cfg) -> dict:
    """Run every (k, method) over `protocol.seeds`; writes OUT/kshot.json and returns
    {"metric": name, "rows": {k: {method: (mean, std)}}} for `shot_table`."""
    from specaware.finetune.runner import run
    from specaware.finetune.metrics import HEADLINE
    metric = HEADLINE[cfg.task]
    rows: dict[int, dict[str, tuple[float, float]]] = {}
    for k, method, c in shot_configs(cfg):
        log.info("k-shot: k=%d method=%s seeds=%s", k, method, list(c.protocol.seeds))
        summary = run(c)
        init = next(iter(summary))
        rows.setdefault(k, {})[method] = tuple(summary[init][metric])
        result = {"task": cfg.task, "metric": metric, "seeds": list(cfg.protocol.seeds),
                  "rows": {str(k): v for k, v in rows.items()}}
        # written after every cell: a later cell's error (a class too small for k) keeps these
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "kshot.json").write_text(json.dumps(result, indent=2))
    return result


def shot_table(result: dict) -> str:
    """Markdown table: one row per shot count, one column per method, mean ± std in percent."""
    from specaware.finetune.metrics import format_mean_std
    methods = list(next(iter(result["rows"].values())).keys())
    lines = [f"| shots | {' | '.join(methods)} |", "|---" * (len(methods) + 1) + "|"]
    for k, row in result["rows"].items():
        lines.append(f"| {k} | " + " | ".join(format_mean_std(*row[m]) for m in methods) + " |")
    return f"{result['metric']} over seeds {result['seeds']}\n" + "\n".join(lines)

"""Active learning for pixel classification (.mat benchmark) and scene classification (tiles).

HSSAL (arXiv 2511.18058): start from a few labels per class; each round train, score the
unlabelled pool, and query the samples that are uncertain (margin or entropy of the class
probabilities) and diverse (progressive clustering of encoder features: the most uncertain
candidates are clustered and each cluster gives its most uncertain member); weak-to-strong
self-training adds confident pseudo-labels (the weak view labels, the strong view learns).

What trains: each round, a linear classifier on the encoder's pooled features (the center
token of each pixel's patch, the mean over a tile) scores the pool and gives the test accuracy;
its weak view is the clean feature, the strong view the same feature with dropout and noise.
With `protocol.active.train=linear` (default) the encoder stays frozen and the features are
computed once. With `train=prompt|full` the loop is closed (active_train.py): before each
round's scoring, prompt tokens or the whole encoder are fine-tuned on the labelled samples plus
the previous round's confident pseudo-labels (strong view of the input), and every feature is
recomputed. The oracle is the benchmark's ground truth; only queried pixels are counted as
labelled, never pseudo-labels.
A random-query baseline spends the same budget from the same start. Output: OUT/active.json
(accuracy against labelled pixels for both strategies) and OUT/active.png.

Letters: n pixels, d feature width, k classes.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from specaware.finetune.config import ActiveConfig

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """Indices into the feature rows: labelled (queried or initial), unlabelled pool, test."""
    labelled: np.ndarray
    pool: np.ndarray
    test: np.ndarray
    queried: list[int] = field(default_factory=list)
    # the last round's pseudo-labelled pool rows, most confident first, and their labels: they
    # train (never counted as labelled or queried)
    pseudo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pseudo_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def start_pool(labels: np.ndarray, test: np.ndarray, per_class: int, seed: int) -> Pool:
    """`per_class` labelled rows per class drawn from the non-test rows; the rest is the pool."""
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(len(labels)), test)
    start = [rng.permutation(rest[labels[rest] == c])[:per_class] for c in np.unique(labels)]
    labelled = np.sort(np.concatenate(start))
    return Pool(labelled, np.setdiff1d(rest, labelled), np.asarray(test))


def train_linear(x: np.ndarray, y: np.ndarray, k: int, cfg: ActiveConfig, seed: int,
                 pseudo_x: np.ndarray | None = None, pseudo_y: np.ndarray | None = None):
    """Logistic regression (torch, full batch) on labelled rows, plus pseudo-labelled rows seen
    through the strong view (dropout 0.2 + noise 0.1 std). Returns predict_proba(x) -> [n, k]."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    X, Y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    for _ in range(cfg.epochs):
        loss = torch.nn.functional.cross_entropy(head(X), Y)
        if pseudo_x is not None and len(pseudo_x):
            P = torch.as_tensor(pseudo_x, dtype=torch.float32)
            keep = (torch.rand(P.shape, generator=g) > 0.2).float() / 0.8
            strong = P * keep + 0.1 * torch.randn(P.shape, generator=g)
            loss = loss + torch.nn.functional.cross_entropy(head(strong), torch.as_tensor(pseudo_y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def proba(rows: np.ndarray) -> np.ndarray:
        return torch.softmax(head(torch.as_tensor(rows, dtype=torch.float32)), -1).numpy()
    return proba


def uncertainty(p: np.ndarray, score: str) -> np.ndarray:
    """[n] higher = more informative: 1 - (top1 - top2) (margin) or the entropy (nats)."""
    if score == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
    top = np.sort(p, axis=1)
    return 1.0 - (top[:, -1] - top[:, -2])


def query_diverse(feats: np.ndarray, scores: np.ndarray, pool: np.ndarray, budget: int,
                  candidates: int, seed: int) -> np.ndarray:
    """`budget` pool rows: the budget x `candidates` most uncertain, clustered into `budget`
    groups (k-means on their features) and the most uncertain member of each taken; groups
    that come out empty are filled with the next most uncertain rows."""
    from specaware.data.prune import kmeans
    budget = min(budget, len(pool))
    top = pool[np.argsort(-scores, kind="stable")[:budget * max(1, candidates)]]
    labels, _ = kmeans(feats[top], budget, seed)
    chosen = []
    for j in range(budget):
        members = top[labels == j]     # `top` is in descending uncertainty: first = most
        if len(members):
            chosen.append(members[0])
    for row in top:                    # fill clusters that came out empty
        if len(chosen) >= budget:
            break
        if row not in chosen:
            chosen.append(row)
    return np.array(chosen[:budget], np.int64)


def active_round(feats, labels, state: Pool, cfg: ActiveConfig, k: int, seed: int,
                 strategy: str) -> tuple[Pool, float]:
    """Train on the labelled rows (+ pseudo-labels), report test accuracy, then query `budget`
    new pool rows from the oracle (`labels`). Pseudo-labels never enter `labelled`/`queried`."""
    pseudo_x = pseudo_y = None
    pseudo = pseudo_y_sorted = np.zeros(0, np.int64)
    if cfg.pseudo_threshold < 1.0 and strategy == "active":
        weak = train_linear(feats[state.labelled], labels[state.labelled], k, cfg, seed)
        p = weak(feats[state.pool])
        sure = p.max(1) >= cfg.pseudo_threshold
        pseudo_x, pseudo_y = feats[state.pool[sure]], p[sure].argmax(1)
        order = np.argsort(-p[sure].max(1), kind="stable")
        pseudo, pseudo_y_sorted = state.pool[sure][order], pseudo_y[order]
    proba = train_linear(feats[state.labelled], labels[state.labelled], k, cfg, seed,
                         pseudo_x, pseudo_y)
    acc = float((proba(feats[state.test]).argmax(1) == labels[state.test]).mean())
    if strategy == "active":
        scores = uncertainty(proba(feats[state.pool]), cfg.score)
        new = query_diverse(feats, scores, state.pool, cfg.budget, cfg.candidates, seed)
    else:
        rng = np.random.default_rng(seed)
        new = rng.choice(state.pool, size=min(cfg.budget, len(state.pool)), replace=False)
    fresh = ~np.isin(pseudo, new)          # a queried row now has its oracle label
    return Pool(np.union1d(state.labelled, new), np.setdiff1d(state.pool, new), state.test,
                state.queried + [int(i) for i in new], pseudo[fresh],
                pseudo_y_sorted[fresh]), acc


def run_loop(feats, labels, test, cfg: ActiveConfig, seed: int, strategy: str,
             trainer=None) -> list[dict]:
    """[{"labelled": count, "queried": count, "accuracy": test OA}] after each training.
    `trainer` (active_train.RoundTrainer) closes the loop: before each round it fine-tunes on
    the labelled rows + the last round's pseudo-labels and returns the new features."""
    k = int(labels.max()) + 1
    state = start_pool(labels, test, cfg.initial_per_class, seed)
    curve = []
    for r in range(cfg.rounds + 1):
        before = len(state.labelled)
        if trainer is not None:
            feats = trainer.fit_round(state.labelled, state.pseudo, state.pseudo_labels)
        nxt, acc = active_round(feats, labels, state, cfg, k, seed + r, strategy)
        curve.append({"round": r, "labelled": before, "queried": len(state.queried),
                      "accuracy": acc})
        state = nxt
    return curve


def _samples(cfg, seed: int):
    """(dataset of samples, labels [n], classes, pool): every labelled pixel's patch of a .mat
    scene (pool=center), or every tile of a `root/<class>/` folder (pool=mean)."""
    if cfg.data.kind == "tiles":
        from specaware.finetune.datasets.tiles import TileFolder
        d = cfg.data
        folder = TileFolder(d.root, d.sensor, d.wavelength, d.normalize)
        return folder, np.asarray(folder.labels, np.int64), len(folder.class_names), "mean"
    from specaware.finetune.datasets.mat import load_benchmark
    from specaware.finetune.datasets.protocol import PixelPatches
    d = cfg.data
    scene = load_benchmark(d.benchmark, d.image, d.gt or None, wavelength=d.wavelength or None,
                           image_key=d.keys.get("image"), gt_key=d.keys.get("gt"),
                           normalize=d.normalize)
    coords = np.argwhere(scene.labels >= 0)
    cap = cfg.protocol.active.max_pixels
    if 0 < cap < len(coords):
        pick = np.random.default_rng(seed).choice(len(coords), cap, replace=False)
        coords = coords[np.sort(pick)]
    labels = scene.labels[coords[:, 0], coords[:, 1]].astype(np.int64)
    return PixelPatches(scene, coords, cfg.protocol.patch), labels, scene.num_classes, "center"


def pixel_features(cfg, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, d] standardised, labels [n]) of the samples of `_samples`: the frozen
    encoder's pooled tokens (center token of a pixel's patch, mean over a tile), computed on
    `cfg.device` (auto: the GPU when there is one) like the closed loop's."""
    import copy

    from specaware.finetune.active_train import pooled_features
    from specaware.finetune.checkpoint import build_head
    from specaware.finetune.distributed import resolve_device
    from specaware.finetune.runner import make_encoder
    dataset, labels, classes, pool = _samples(cfg, seed)
    encoder = make_encoder(cfg, "pretrained" if cfg.model.checkpoint else "random")
    m = copy.deepcopy(cfg.model)
    m.freeze, m.pool, m.prompts = "encoder", pool, 0
    model = build_head("classification", encoder, classes, m).to(resolve_device(cfg.device))
    return pooled_features(model, dataset, cfg.optim.batch_size), labels


def closed_loop(cfg, seed: int, strategy: str, samples, test: np.ndarray) -> list[dict]:
    """One (seed, strategy) run with the encoder fine-tuned between rounds (train=prompt|full)."""
    from specaware.finetune.active_train import RoundTrainer
    dataset, labels, classes, pool = samples
    trainer = RoundTrainer(cfg, dataset, labels, classes, pool, seed)
    return run_loop(None, labels, test, cfg.protocol.active, seed, strategy, trainer)


def run_active(cfg) -> dict:
    """Active vs random over `protocol.seeds` -> OUT/active.json + OUT/active.png."""
    from specaware.config import ConfigError
    from specaware.finetune.datasets.tiles import stratified_split
    a = cfg.protocol.active
    if cfg.task != "classification" or cfg.data.kind not in ("mat", "tiles"):
        raise ConfigError("protocol.active: implemented for pixel classification on a .mat "
                          "benchmark (data.kind=mat) and scene classification of tiles "
                          f"(data.kind=tiles), not task={cfg.task} kind={cfg.data.kind}")
    if a.score not in ("margin", "entropy"):
        raise ConfigError(f"config key 'protocol.active.score': {a.score!r} is not margin or "
                          "entropy")
    if a.train not in ("linear", "prompt", "full"):
        raise ConfigError(f"config key 'protocol.active.train': {a.train!r} is not linear "
                          "(frozen features), prompt or full (fine-tuned between rounds)")
    out = {"budget": a.budget, "rounds": a.rounds, "score": a.score, "train": a.train,
           "pseudo_threshold": a.pseudo_threshold, "seeds": list(cfg.protocol.seeds),
           "runs": {"active": [], "random": []}}
    if a.train == "linear":
        feats, labels = pixel_features(cfg, cfg.protocol.seeds[0])
    else:
        samples = _samples(cfg, cfg.protocol.seeds[0])
        labels = samples[1]
    for seed in cfg.protocol.seeds:
        test = stratified_split(labels, seed, 0.0, cfg.protocol.test_fraction)[2]
        for strategy in ("active", "random"):
            curve = (run_loop(feats, labels, test, a, seed, strategy) if a.train == "linear"
                     else closed_loop(cfg, seed, strategy, samples, test))
            out["runs"][strategy].append(curve)
    out["summary"] = {s: _mean_curve(runs) for s, runs in out["runs"].items()}
    path = Path(cfg.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "active.json").write_text(json.dumps(out, indent=1))
    plot_curves(out["summary"], path / "active.png")
    return out


def _mean_curve(runs: list[list[dict]]) -> list[dict]:
    acc = np.array([[p["accuracy"] for p in run] for run in runs])
    return [{"labelled": p["labelled"], "accuracy": float(m), "std": float(s)}
            for p, m, s in zip(runs[0], acc.mean(0), acc.std(0))]


def plot_curves(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in summary.items():
        x = [p["labelled"] for p in curve]
        y = np.array([p["accuracy"] for p in curve]) * 100
        s = np.array([p["std"] for p in curve]) * 100
        ax.plot(x, y, marker="o", label=name)
        ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("labelled pixels (queried + initial)")
    ax.set_ylabel("test overall accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def active_table(out: dict) -> str:
    lines = ["| labelled | active OA | random OA |", "|---|---|---|"]
    for a, r in zip(out["summary"]["active"], out["summary"]["random"]):
        lines.append(f"| {a['labelled']} | {100 * a['accuracy']:.1f} ± {100 * a['std']:.1f} | "
                     f"{100 * r['accuracy']:.1f} ± {100 * r['std']:.1f} |")
    return "\n".join(lines)

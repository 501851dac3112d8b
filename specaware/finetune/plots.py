"""Figures written next to the metrics: confusion matrix PNG and class/change map previews.
matplotlib runs headless (Agg); nothing here is needed to train."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_confusion_png(cm: np.ndarray, path: str | Path, class_names: list[str] | None = None,
                       title: str = "") -> None:
    """Row-normalised confusion matrix (recall per reference class) with counts annotated."""
    plt = _pyplot()
    cm = np.asarray(cm)
    k = len(cm)
    names = class_names or [str(i) for i in range(k)]
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    size = min(3 + 0.45 * k, 16)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def class_colours(k: int) -> np.ndarray:
    """k distinct RGB colours uint8 [k, 3] (tab20, then hsv for more classes)."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if k <= 20 else "hsv", k)
    return (np.asarray([cmap(i)[:3] for i in range(k)]) * 255).astype(np.uint8)


def save_map_png(labels: np.ndarray, path: str | Path, num_classes: int,
                 ignore: int = -1) -> None:
    """A class map [H, W] as an RGB PNG (unlabelled pixels black)."""
    plt = _pyplot()
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    colours = class_colours(max(num_classes, 1))
    ok = (labels != ignore) & (labels >= 0) & (labels < num_classes)
    rgb[ok] = colours[labels[ok]]
    plt.imsave(path, rgb)

"""Figures written next to the metrics: confusion matrix PNG and class/change map previews.
matplotlib runs headless (Agg); nothing here is needed to train."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_MIN_MAP_PIXELS = 480   # small scenes are shown enlarged (nearest neighbour) to at least this


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _annotate(ax, cm: np.ndarray, frac: np.ndarray) -> None:
    """Count and row percentage in every cell, font shrinking with the number of classes."""
    k = len(cm)
    size = max(6.5, min(11.0, 80.0 / k))
    for i in range(k):
        for j in range(k):
            text = f"{int(cm[i, j])}\n{100 * frac[i, j]:.0f}%" if k <= 12 else str(int(cm[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if frac[i, j] > 0.5 else "black")


def save_confusion_png(cm: np.ndarray, path: str | Path, class_names: list[str] | None = None,
                       title: str = "", summary: dict | None = None,
                       unit: str = "samples") -> None:
    """Row-normalised confusion matrix (recall per reference class) with counts annotated.

    `summary` (e.g. {"OA": 0.91, "kappa": 0.88}, shown x100 as in papers) is printed under the
    title, with the number of `unit` (samples, pixels) counted."""
    plt = _pyplot()
    cm = np.asarray(cm)
    k = len(cm)
    names = class_names or [str(i) for i in range(k)]
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    size = min(4.5 + 0.35 * k, 14)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the reference class")
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if k <= 25:
        _annotate(ax, cm, frac)
    line = "  ".join(f"{n} {100 * v:.1f}" for n, v in (summary or {}).items()
                     if v is not None and np.isfinite(v))
    ax.set_title("\n".join(t for t in (title, line, f"{int(cm.sum())} {unit}") if t))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def class_colours(k: int) -> np.ndarray:
    """k distinct RGB colours uint8 [k, 3]: tab10, tab20 (for up to 20 classes), then hsv."""
    plt = _pyplot()
    if k <= 10:
        colours = plt.get_cmap("tab10").colors[:k]
    elif k <= 20:
        colours = plt.get_cmap("tab20").colors[:k]
    else:
        cmap = plt.get_cmap("hsv", k)
        colours = [cmap(i)[:3] for i in range(k)]
    return (np.asarray(colours) * 255).astype(np.uint8)


def change_colours(k: int) -> np.ndarray:
    """Change maps: light grey for "no change", red then the other tab10 hues for change types."""
    plt = _pyplot()
    tab = plt.get_cmap("tab10").colors
    hues = [tab[3], tab[1], tab[4], tab[0], tab[2], tab[5], tab[6], tab[8], tab[9]]
    rest = [hues[i % len(hues)] for i in range(max(k - 1, 0))]
    return (np.asarray([(0.85, 0.85, 0.85), *rest]) * 255).astype(np.uint8)


def colour_map(labels: np.ndarray, num_classes: int, ignore: int = -1,
               colours: np.ndarray | None = None) -> np.ndarray:
    """Class map [H, W] -> RGB uint8 [H, W, 3]; unlabelled/nodata pixels black."""
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    colours = class_colours(max(num_classes, 1)) if colours is None else colours
    ok = (labels != ignore) & (labels >= 0) & (labels < num_classes)
    rgb[ok] = colours[labels[ok]]
    return rgb


def save_map_png(labels: np.ndarray, path: str | Path, num_classes: int, ignore: int = -1,
                 class_names: list[str] | None = None, title: str = "") -> None:
    """A class map [H, W] as a PNG with a legend of class names (nodata black).

    Small maps are enlarged so pixels stay visible; the figure keeps the map's aspect ratio."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    h, w = labels.shape
    names = class_names or [f"class {i}" for i in range(num_classes)]
    dpi = 100
    scale = max(1.0, _MIN_MAP_PIXELS / max(h, w))
    map_w, map_h = w * scale / dpi, h * scale / dpi
    fig = plt.figure(figsize=(map_w + 2.4, max(map_h, 1.6) + 0.5), dpi=dpi)
    ax = fig.add_axes((0.02, 0.02, map_w / (map_w + 2.4), 1 - 0.5 / (max(map_h, 1.6) + 0.5)))
    palette = (change_colours(num_classes) if names and names[0] == "no change"
               else class_colours(max(num_classes, 1)))
    ax.imshow(colour_map(labels, num_classes, ignore, palette), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    handles = [Patch(color=palette[i] / 255.0, label=names[i]) for i in range(num_classes)]
    if (labels == ignore).any():
        handles.append(Patch(color="black", label="nodata"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              frameon=False, borderaxespad=0.0)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)

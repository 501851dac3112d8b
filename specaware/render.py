"""Every image specaware draws: pretraining's reconstruction panels (false colour, hidden patches,
reconstruction, target view) and fine-tuning's confusion matrices and class/change maps.
matplotlib runs headless (Agg) and is imported only when a figure is drawn.

A panel shows, per sample: the input in false colour, the input with the patches the encoder
did not see greyed out, the reconstruction, and the target view when it differs from the input
(cross-sensor reconstruction). Bands are picked nearest to `wandb.panel_rgb_nm`; all three
images of a sample share one contrast stretch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat

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


# --- reconstruction panels (pretraining) -------------------------------------------------

def _nearest_bands(wavelength: torch.Tensor, real: torch.Tensor, targets) -> list[int]:
    """Index of the real band nearest to each target wavelength (nm)."""
    wl = torch.where(real, wavelength.float(), torch.full_like(wavelength.float(), 1e9))
    return [int(torch.argmin((wl - t).abs())) for t in targets]


def false_colour(image: torch.Tensor, bands: list[int], lo=None, hi=None):
    """[C, H, W] -> RGB float [H, W, 3] in 0..1, one 2-98 % stretch shared by the channels.

    Sharing it keeps the colour balance, so a reconstruction whose spectrum is off shows the
    wrong colour and a flat tile looks flat (a stretch per channel would turn the noise of a
    uniform water tile into confetti). Returns (rgb, lo, hi) so other images of the same ground
    reuse the stretch.
    """
    rgb = rearrange(image[bands].float(), "c h w -> h w c").cpu().numpy()
    if lo is None:
        lo, hi = np.percentile(rgb, [2, 98])
    span = np.maximum(hi - lo, 1e-6)
    return np.clip((rgb - lo) / span, 0.0, 1.0), lo, hi


def _panel_row(batch: dict, pred: torch.Tensor, mask: torch.Tensor, i: int, patch: int,
               rgb_nm) -> list[tuple[str, np.ndarray]]:
    target = batch.get("target") or batch
    src_bands = _nearest_bands(batch["wavelength"][i], batch["band_mask"][i], rgb_nm)
    tgt_bands = _nearest_bands(target["wavelength"][i], target["band_mask"][i], rgb_nm)
    shown, lo, hi = false_colour(batch["image"][i], src_bands)
    h, w = batch["image"].shape[-2:]
    hidden = rearrange(mask[i].cpu(), "(gh gw) -> gh gw", gh=h // patch, gw=w // patch)
    hidden = repeat(hidden, "gh gw -> (gh k1) (gw k2) 1", k1=patch, k2=patch).numpy()
    masked = np.where(hidden, 0.5, shown)
    truth, tlo, thi = false_colour(target["image"][i], tgt_bands)
    recon, _, _ = false_colour(pred[i], tgt_bands, tlo, thi)
    # the loss never sees the visible patches, so their prediction means nothing: show the
    # (target view of the) visible patches there, as MAE figures do
    recon = np.where(hidden, recon, truth)
    row = [("input", shown), ("masked input", masked), ("reconstruction + visible", recon)]
    if batch.get("target") is not None:
        row.append(("target view", truth))
    return row


def render_panel(batch: dict, pred: torch.Tensor, mask: torch.Tensor, patch: int, path,
                 rgb_nm=(640.0, 550.0, 460.0), max_rows: int = 4, title: str = "") -> Path:
    """Write the panel PNG for up to `max_rows` samples. pred [B, C_t, H, W], mask bool [B, N]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [_panel_row(batch, pred.detach(), mask, i, patch, rgb_nm)
            for i in range(min(max_rows, pred.shape[0]))]
    ncol = len(rows[0])
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.6 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, (name, img) in enumerate(row):
            axes[r][c].imshow(img, interpolation="nearest")
            axes[r][c].set_axis_off()
            if r == 0:
                axes[r][c].set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

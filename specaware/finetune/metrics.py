"""Metrics reported in hyperspectral classification and change detection papers.

All are computed from one confusion matrix `cm` [K, K] (rows = reference class, columns =
predicted class), so they can be accumulated batch by batch and checked by hand:
- OA (overall accuracy) = trace / total; AA = mean of per-class recall (producer's accuracy);
- Cohen's kappa = (p_o - p_e) / (1 - p_e), p_e = sum_k row_k * col_k / total^2;
- IoU_k = cm_kk / (row_k + col_k - cm_kk), mIoU; F1_k = 2 cm_kk / (row_k + col_k), mean F1;
- change detection: class 0 = no change, every other class = change; F1, IoU, precision, recall
  of the change class and the binary kappa, plus the multi-class numbers when K > 2.
Classes absent from both reference and prediction are NaN per class and left out of the means.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """Counts [K, K] int64 of (reference, predicted) pairs; `ignore_index` targets are skipped."""
    pred = torch.as_tensor(pred).reshape(-1).long().cpu()
    target = torch.as_tensor(target).reshape(-1).long().cpu()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (target.max() >= num_classes or target.min() < 0):
        raise ValueError(f"reference labels span {int(target.min())}..{int(target.max())}, "
                         f"outside 0..{num_classes - 1} (ignore_index={ignore_index})")
    flat = target * num_classes + pred.clamp(0, num_classes - 1)
    return torch.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, -1).numpy()


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def kappa(cm: np.ndarray) -> float:
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        return float("nan")
    po = np.trace(cm) / total
    pe = float((cm.sum(1) * cm.sum(0)).sum()) / total ** 2
    return 1.0 if pe == 1 else float((po - pe) / (1 - pe))


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def classification_metrics(cm: np.ndarray) -> dict:
    """OA, AA, kappa, per-class accuracy, IoU, mIoU, F1, mean F1 from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    diag, rows, cols = np.diag(cm), cm.sum(1), cm.sum(0)
    per_class = _div(diag, rows)
    iou = _div(diag, rows + cols - diag)
    f1 = _div(2 * diag, rows + cols)
    return {"oa": float(_div(diag.sum(), cm.sum())), "aa": _nanmean(per_class), "kappa": kappa(cm),
            "per_class_acc": per_class.tolist(), "iou": iou.tolist(), "miou": _nanmean(iou),
            "f1": f1.tolist(), "mean_f1": _nanmean(f1), "support": rows.tolist()}


def change_metrics(cm: np.ndarray) -> dict:
    """Binary change numbers (class 0 vs the rest); multi-class numbers added when K > 2."""
    cm = np.asarray(cm, dtype=np.int64)
    tn, fp = cm[0, 0], cm[0, 1:].sum()
    fn, tp = cm[1:, 0].sum(), cm[1:, 1:].sum()
    binary = np.array([[tn, fp], [fn, tp]])
    out = {"oa": float(_div(tn + tp, binary.sum())), "kappa": kappa(binary),
           "precision": float(_div(tp, tp + fp)), "recall": float(_div(tp, tp + fn)),
           "f1": float(_div(2 * tp, 2 * tp + fp + fn)), "iou": float(_div(tp, tp + fp + fn))}
    if cm.shape[0] > 2:
        multi = classification_metrics(cm)
        out.update({f"multi_{k}": multi[k] for k in ("oa", "aa", "kappa", "miou", "mean_f1")})
    return out


def task_metrics(cm: np.ndarray, task: str) -> dict:
    return change_metrics(cm) if task == "change" else classification_metrics(cm)


HEADLINE = {"classification": "oa", "segmentation": "miou", "change": "kappa"}


def summarize(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and (population) std over runs of every scalar metric, e.g. {"oa": (0.91, 0.01)}."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))] if runs else []
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = (float(np.mean(vals)), float(np.std(vals)))
    return out


def format_mean_std(mean: float, std: float, percent: bool = True) -> str:
    if math.isnan(mean):
        return "nan"
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def save_confusion_csv(cm: np.ndarray, path: str | Path, class_names: list[str] | None = None):
    """CSV with a header row of predicted classes and one row per reference class."""
    names = class_names or [str(i) for i in range(len(cm))]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reference\\predicted", *names])
        for name, row in zip(names, np.asarray(cm)):
            w.writerow([name, *[int(v) for v in row]])

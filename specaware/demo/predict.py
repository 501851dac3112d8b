"""Predictions of the held-out scene for the demo's maps, from fine-tuned best checkpoints.

Segmentation and change use the sliding-window `predict_scene` of `specaware predict`; scene
classification labels each non-overlapping tile of the scene and paints the tile with its class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from specaware.synth.write import CLASS_COLOURS, read_labels

CHANGE_NAMES = ["no change", "change"]
CHANGE_COLOURS = ((225, 225, 225), (220, 40, 40))


def ground_truth(task: str, data) -> tuple[np.ndarray, list[str], tuple]:
    """Reference map int64 [H, W] (-1 = nodata), class names and their RGB colours."""
    key = "change" if task == "change" else "labels"
    labels, names = read_labels(data.held_out[key])
    labels = labels.astype(np.int64)
    labels[labels == 255] = -1
    if task == "change":
        return labels, CHANGE_NAMES, CHANGE_COLOURS
    return labels, list(data.class_names), CLASS_COLOURS


def _infos(meta: dict, data, task: str):
    from specaware.data.reader import RasterReader
    norm = meta.get("data", {}).get("normalization") or {"normalize": "none"}
    infos = [RasterReader.open(data.held_out["t1"], normalization=norm)]
    if task == "change":
        norm2 = meta.get("data", {}).get("normalization_t2") or norm
        infos.append(RasterReader.open(data.held_out["t2"], normalization=norm2))
    return infos


def predict_held_out(task: str, checkpoint: Path, data, work_dir: Path) -> np.ndarray:
    """Predicted map int64 [H, W] of the held-out scene (-1 where not predicted / nodata).

    Class indices are mapped to the names of the reference map, so colours agree even when the
    classification tiles left out a rare class."""
    from specaware.finetune.checkpoint import load_finetuned
    model, meta = load_finetuned(checkpoint)
    infos = _infos(meta, data, task)
    if task == "classification":
        pred = _classify_tiles(model, meta, infos[0])
        lookup = np.array([data.class_names.index(n) for n in meta["class_names"]])
        return np.where(pred >= 0, lookup[np.maximum(pred, 0)], -1)
    from specaware.finetune.predict import predict_scene
    work_dir.mkdir(parents=True, exist_ok=True)
    init = checkpoint.parent.parent.name
    out = predict_scene(model, meta, infos, work_dir / f"{task}_{init}.tif",
                        int(meta["data"].get("tile", 32)), 0.5, 8, torch.device("cpu"))
    with rasterio.open(out) as ds:
        labels = ds.read(1).astype(np.int64)
        labels[labels == ds.nodata] = -1
    return labels


@torch.no_grad()
def _classify_tiles(model, meta: dict, info) -> np.ndarray:
    from specaware.data.collate import collate
    t = int(meta["data"].get("tile", 16))
    H, W = info.shape
    pred = np.full((H, W), -1, np.int64)
    windows = [(r, c) for r in range(0, H - t + 1, t) for c in range(0, W - t + 1, t)]
    for i in range(0, len(windows), 32):
        chunk = windows[i:i + 32]
        samples = [info.read(r, c, t, t) for r, c in chunk]
        keep = [s["valid"].mean() > 0.5 for s in samples]
        if not any(keep):
            continue
        batch = collate([s for s, k in zip(samples, keep) if k])
        classes = model(batch).argmax(1).numpy()
        for (r, c), k in zip([w for w, k in zip(chunk, keep) if k], classes):
            pred[r:r + t, c:c + t] = k
    return pred

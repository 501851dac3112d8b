"""What a finished (init, seed) run leaves in OUT/<init>/seed<k>/: confusion.csv and .png, and
metrics.json, written last (atomically), whose presence marks the run finished for
`--resume auto`; the epoch-checkpoint folder `last/` is removed then."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from specaware.finetune.metrics import save_confusion_csv

log = logging.getLogger(__name__)
TABLE_METRICS = {"classification": ("oa", "aa", "kappa"),
                 "segmentation": ("miou", "oa", "mean_f1"),
                 "change": ("f1", "iou", "kappa", "oa")}
LABELS = {"oa": "OA", "aa": "AA", "miou": "mIoU", "mean_f1": "mean F1", "f1": "F1", "iou": "IoU"}


def finished_metrics(out: Path, resume: str) -> dict | None:
    """With --resume auto, the test metrics of an (init, seed) run that already finished."""
    done = out / "metrics.json"
    if resume != "auto" or not done.is_file():
        return None
    record = json.loads(done.read_text())
    log.info("resume: %s finished before, its metrics are reused", out)
    return {k: v for k, v in record.items()
            if k not in ("init", "seed", "best_epoch", "stopped_early", "history", "parameters")}


def write_outputs(cfg, out: Path, init: str, seed: int, cm, metrics: dict, result,
                  class_names, params: dict) -> None:
    """Confusion CSV/PNG, then metrics.json (test metrics, history, parameter counts)."""
    from specaware.render import save_confusion_png
    save_confusion_csv(cm, out / "confusion.csv", class_names)
    shown = {LABELS.get(k, k): metrics.get(k) for k in TABLE_METRICS[cfg.task]}
    save_confusion_png(cm, out / "confusion.png", class_names,
                       f"{cfg.task}, {init} encoder, seed {seed} (test set)", shown,
                       "samples" if cfg.task == "classification" else "pixels")
    record = {"init": init, "seed": seed, "best_epoch": result.best_epoch,
              "stopped_early": result.stopped_early, **metrics, "history": result.history,
              "parameters": params}
    tmp = out / "metrics.json.tmp"     # its presence marks the run finished (--resume auto)
    tmp.write_text(json.dumps(record, indent=2, default=float))
    tmp.replace(out / "metrics.json")
    shutil.rmtree(out / "last", ignore_errors=True)   # finished: optimizer state is not needed

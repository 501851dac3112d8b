"""Fine-tuning run tracking on rank 0, with pretraining's `wandb.*` keys and Tracker
(specaware/tracking.py): `wandb.mode` online/offline/disabled, the run id kept in
`RUN/wandb_id.txt` (a resumed run continues the same wandb run) and every record also appended
to `RUN/metrics.jsonl`, so a run is inspectable without wandb.

Per epoch, at step = optimizer steps done: `loss` (training mean), `lr` (head), `encoder_lr`
(when the encoder trains), `epoch`, `perf/samples_per_s`, `val/<metric>` for every scalar
validation metric, and, when wandb is on and `wandb.panel_every` > 0, two images also written
as PNG under `RUN/panels/` (with wandb disabled, `confusion.png` of the test set is the figure): `val/confusion` (the validation confusion matrix) and, for dense tasks,
`val/prediction` (reference | prediction of the first validation tile).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from specaware.finetune.metrics import HEADLINE


class FinetuneTracker:
    """Logs one (init, seed) run; every method is a no-op on ranks other than 0."""

    def __init__(self, wandb_cfg, run_dir: Path, resolved_config: dict, is_main: bool,
                 task: str, class_names: list[str], name: str):
        from specaware.tracking import Tracker
        if not wandb_cfg.name:
            wandb_cfg = dataclasses.replace(wandb_cfg, name=name)
        self.cfg, self.run_dir, self.is_main = wandb_cfg, Path(run_dir), is_main
        self.task, self.class_names = task, class_names
        self.tracker = Tracker(wandb_cfg, run_dir, resolved_config, is_main)

    def epoch(self, step: int, epoch: int, loss: float, lrs: dict, val: dict,
              samples_per_s: float) -> None:
        scalars = {f"val/{k}": float(v) for k, v in val.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.tracker.log({"epoch": epoch, "loss": loss, **lrs, "perf/samples_per_s":
                          samples_per_s, **scalars}, step)

    @property
    def wants_images(self) -> bool:
        return self.is_main and self.cfg.panel_every > 0 and self.cfg.mode != "disabled"

    def images(self, step: int, epoch: int, cm: np.ndarray, val: dict,
               example: tuple[np.ndarray, np.ndarray] | None) -> list[Path]:
        """Confusion matrix (and a reference | prediction map) as PNG and wandb images."""
        if not self.wants_images:
            return []
        from specaware.render import save_confusion_png, save_map_png
        folder = self.run_dir / "panels"
        folder.mkdir(parents=True, exist_ok=True)
        metric = HEADLINE[self.task]
        paths = {"val/confusion": folder / f"confusion_epoch{epoch:03d}.png"}
        save_confusion_png(cm, paths["val/confusion"], self.class_names,
                           f"validation, epoch {epoch}", {metric: val.get(metric)},
                           "samples" if self.task == "classification" else "pixels")
        if example is not None:
            reference, predicted = example
            gap = np.full((reference.shape[0], max(1, reference.shape[1] // 16)), -1)
            paths["val/prediction"] = folder / f"prediction_epoch{epoch:03d}.png"
            save_map_png(np.concatenate([reference, gap, predicted], 1),
                         paths["val/prediction"], len(self.class_names),
                         class_names=self.class_names,
                         title=f"epoch {epoch}: reference | prediction (validation tile)")
        if self.tracker.run is not None:
            import wandb
            self.tracker.run.log({k: wandb.Image(str(p), caption=f"epoch {epoch}")
                                  for k, p in paths.items()}, step=step)
        return list(paths.values())

    def summary(self, test: dict) -> None:
        if self.tracker.run is not None:
            for k, v in test.items():
                if isinstance(v, (int, float)):
                    self.tracker.run.summary[f"test/{k}"] = v

    def finish(self) -> None:
        self.tracker.finish()

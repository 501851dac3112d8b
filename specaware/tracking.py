"""Run tracking on rank 0, for pretraining and fine-tuning: wandb, a `metrics.jsonl` record, and
the reconstruction panels that specaware/render.py draws.

wandb mode comes from the config (`online`, `offline`, `disabled`; tests never use the
network). Whatever the mode, rank 0 appends every logged dict to `run_dir/metrics.jsonl`, so a
run is inspectable without wandb. The wandb run id is kept in `run_dir/wandb_id.txt`, so a
resumed run continues the same wandb run.

Every `wandb.panel_every` steps a reconstruction panel (render.render_panel) is written as PNG
and logged. `WandbSection` is the `wandb.*` config section both training loops share.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from specaware.render import render_panel

log = logging.getLogger(__name__)

__all__ = ["Tracker", "WandbSection", "peak_tflops"]


@dataclass
class WandbSection:
    """The `wandb.*` config keys of pretraining and fine-tuning."""
    mode: Literal["online", "offline", "disabled"] = "disabled"
    project: str = "specaware"
    entity: str = ""
    name: str = ""                         # run name; "" = the run folder's name
    tags: list[str] = field(default_factory=list)
    panel_every: int = 500                 # steps between image panels (also PNG in run_dir/panels)
    panel_rgb_nm: tuple[float, float, float] = (640.0, 550.0, 460.0)  # false-colour bands, nm


# Dense peak TFLOP/s per device by precision (vendor data sheets, SXM parts unless named).
# fp32 is plain FP32 (torch leaves TF32 matmul off by default).
_PEAKS = [("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}), ("H100", {"bf16": 989.0, "fp32": 67.0}),
          ("H200", {"bf16": 989.0, "fp32": 67.0}), ("A100", {"bf16": 312.0, "fp32": 19.5}),
          ("L40S", {"bf16": 362.0, "fp32": 91.6}), ("A10", {"bf16": 125.0, "fp32": 31.2})]


def peak_tflops(configured: float, precision: str) -> float | None:
    """Configured figure if > 0, else the table value for the visible GPU, else None."""
    if configured > 0:
        return configured
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, table in _PEAKS:
        if key in name:
            return table[precision]
    return None


class Tracker:
    """Rank 0 logs; other ranks hold a Tracker that does nothing."""

    def __init__(self, wandb_cfg, run_dir, resolved_config: dict, is_main: bool):
        self.cfg, self.run_dir, self.is_main = wandb_cfg, Path(run_dir), is_main
        self.run = None
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
        if wandb_cfg.mode != "disabled":
            self.run = self._init_wandb(resolved_config)

    def _init_wandb(self, resolved_config: dict):
        import wandb

        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        run = wandb.init(project=self.cfg.project, entity=self.cfg.entity or None,
                         name=self.cfg.name or self.run_dir.name, mode=self.cfg.mode,
                         dir=str(self.run_dir), config=resolved_config,
                         tags=list(self.cfg.tags) or None, id=run_id, resume="allow")
        log.info("wandb %s run %s in %s", self.cfg.mode, run_id, self.run_dir)
        return run

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.is_main:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def panel(self, batch: dict, out, patch: int, step: int) -> Path | None:
        """Render the panel PNG into run_dir/panels and log it; rank 0 only."""
        if not self.is_main:
            return None
        path = render_panel(batch, out.pred.float(), out.mask, patch,
                            self.run_dir / "panels" / f"step_{step:08d}.png",
                            rgb_nm=self.cfg.panel_rgb_nm, title=f"step {step}")
        if self.run is not None:
            import wandb
            self.run.log({"panel": wandb.Image(str(path), caption=f"step {step}")}, step=step)
        return path

    def finish(self) -> None:
        if not self.is_main:
            return
        self.jsonl.close()
        if self.run is not None:
            self.run.finish()
            self.run = None

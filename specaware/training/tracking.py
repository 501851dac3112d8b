"""Run tracking on rank 0: wandb, a `metrics.jsonl` record, and reconstruction panels.

wandb mode comes from the config (`online`, `offline`, `disabled`; tests never use the
network). Whatever the mode, rank 0 appends every logged dict to `run_dir/metrics.jsonl`, so a
run is inspectable without wandb. The wandb run id is kept in `run_dir/wandb_id.txt`, so a
resumed run continues the same wandb run.

A panel (every `wandb.panel_every` steps) shows, per sample: the input in false colour, the
input with the patches the encoder did not see greyed out, the reconstruction, and the target
view when it differs from the input (cross-sensor reconstruction). Bands are picked nearest to
`wandb.panel_rgb_nm`; all three images of a sample share one contrast stretch.
"""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat

log = logging.getLogger(__name__)

__all__ = ["Tracker", "render_panel", "peak_tflops", "false_colour"]

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

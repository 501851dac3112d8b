"""The demo's pictures: pretraining loss curve, one reconstruction panel per sensor (a final
eval pass of the exported model over each sensor's tiles), and prediction maps of the held-out
scene next to its ground truth for every task. matplotlib runs headless (Agg)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from specaware.naming import inside, safe_name

NODATA_RGB = (0, 0, 0)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_curve(metrics_jsonl: Path, path: Path) -> Path:
    """Training loss (and its parts) against the optimizer step, from the trainer's JSONL."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        raise ValueError(f"{metrics_jsonl}: no logged losses; did pretraining run any step?")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], label="total loss", lw=2)
    for key in sorted({k for r in rows for k in r if k.startswith("loss/")}):
        ax.plot(steps, [r.get(key, np.nan) for r in rows], label=key.split("/", 1)[1], lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masked reconstruction loss")
    ax.set_title("Pretraining loss (masked patches, valid pixels)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load_mae(export: Path):
    from specaware.export import match_scalars
    from specaware.finetune import api
    state, meta = api._read_checkpoint(Path(export), "cpu")
    model = api.build_model(meta.get("model_config"), meta.get("model"))
    model.load_state_dict(match_scalars(state, model.state_dict()))
    return model.eval(), meta


@torch.no_grad()
def reconstruction_panels(export: Path, shards: Path, out_dir: Path, seed: int = 0,
                          rows: int = 3) -> dict[str, Path]:
    """`recon_<sensor>.png` for every sensor of the shard manifest: input, masked input and
    reconstruction of `rows` tiles, reconstructed by the exported model (masking ratio of its
    config, fixed seed)."""
    from specaware.data.stream import make_loader
    from specaware.render import render_panel
    model, meta = _load_mae(export)
    manifest = json.loads((Path(shards) / "manifest.json").read_text())
    by_sensor: dict[str, list[str]] = {}
    for row in manifest["tiles"]:  # the real spyndex tile: its own panel (4 bands, real data)
        name = "real-" + row["sensor"] if row["scene"].startswith("spyndex") else row["sensor"]
        by_sensor.setdefault(name, []).append(row["key"])
    made = {}
    for sensor, keys in sorted(by_sensor.items()):
        pick = [keys[i] for i in np.linspace(0, len(keys) - 1, min(rows, len(keys))).astype(int)]
        loader = make_loader(str(shards), mode="eval", batch_size=rows, num_workers=0,
                             keys=pick, bucket_by="sensor_bands")
        batch = next(iter(loader))
        torch.manual_seed(seed)
        out = model(batch)
        made[sensor] = render_panel(
            batch, out.pred.float(), out.mask, model.config.patch_size,
            inside(out_dir, f"recon_{safe_name(sensor)}", ".png"), max_rows=rows,
            title=f"{sensor}: {batch['band_mask'][0].sum().item()} bands, "
                  f"{out.mask.float().mean():.0%} of patches hidden, model step {meta.get('step')}")
    return made


def _rgb(labels: np.ndarray, colours, ignore: int = -1) -> np.ndarray:
    table = np.asarray(colours, np.uint8)
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    ok = (labels != ignore) & (labels >= 0) & (labels < len(table))
    rgb[ok] = table[labels[ok]]
    rgb[~ok] = NODATA_RGB
    return rgb


def map_figure(panels: list[tuple[str, np.ndarray]], names: list[str], colours, path: Path,
               title: str) -> Path:
    """Label maps side by side (same colours) with a legend of the classes present."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 4.0), squeeze=False)
    present = sorted({int(v) for _, m in panels for v in np.unique(m) if 0 <= v < len(names)})
    for ax, (name, labels) in zip(axes[0], panels):
        ax.imshow(_rgb(labels, colours), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    handles = [Patch(color=np.asarray(colours[k]) / 255, label=names[k]) for k in present]
    handles.append(Patch(color=np.asarray(NODATA_RGB) / 255, label="nodata / not tiled"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def task_maps(task: str, finetune_dir: Path, data, report_dir: Path, seed: int) -> list[Path]:
    """Predict the held-out scene with the best pretrained and random models of `seed` and draw
    ground truth | pretrained | random."""
    from specaware.demo import predict
    report_dir.mkdir(parents=True, exist_ok=True)
    truth, names, colours = predict.ground_truth(task, data)
    panels = [("ground truth", truth)]
    for init in ("pretrained", "random"):
        ckpt = Path(finetune_dir) / init / f"seed{seed}" / "best.safetensors"
        if ckpt.exists():
            panels.append((f"{init} encoder", predict.predict_held_out(task, ckpt, data,
                                                                       report_dir / "maps")))
    scene = data.held_out["t1"].stem.split("_t1_")[0]
    title = {"classification": "Scene classification, one class per tile",
             "segmentation": "Land-cover segmentation",
             "change": "Change detection t1 -> t2"}[task]
    path = map_figure(panels, names, colours, report_dir / f"map_{task}.png",
                      f"{title}: held-out {scene} ({data.sensor})")
    return [path]

"""Reporting of a federated run: summary per strategy, the Markdown table, the PNG of accuracy
against rounds and against cumulative bytes, and wandb (when `wandb.mode` is not disabled).

`rounds.jsonl` rows (one per strategy and round): round, strategy, accuracy (validation,
weighted by each client's validation tiles), bytes_up, bytes_down (training messages, all
clients), bytes_eval_up/down (evaluation messages), train_loss, clients {id: {accuracy,
num_examples}}.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {"prompt_dual": "shared+private prompts (ours)", "prompt_shared": "shared prompts only",
          "fedavg_head_blocks": "FedAvg head + last K blocks", "local": "local only"}


def read_rounds(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per strategy: final and best accuracy, total training bytes, final per-client accuracy."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["strategy"] for r in rows):
        mine = sorted((r for r in rows if r["strategy"] == name), key=lambda r: r["round"])
        last = mine[-1]
        out[name] = {
            "rounds": last["round"], "accuracy": last["accuracy"],
            "best_accuracy": max(r["accuracy"] for r in mine),
            "bytes_up": sum(r["bytes_up"] for r in mine),
            "bytes_down": sum(r["bytes_down"] for r in mine),
            "client_accuracy": {k: v["accuracy"] for k, v in last["clients"].items()}}
    return out


def _mb(n: float) -> str:
    return f"{n / 1e6:.3f}" if n < 1e7 else f"{n / 1e6:.1f}"


def table(summary: dict[str, dict], clients: list[str], leakage: dict | None = None) -> str:
    """Markdown: strategy, final accuracy, per-client accuracy, MB up/down, and with an audit
    the mean AUC of each attack over the audited clients."""
    attacks = sorted({a for s in (leakage or {}).values() for a in s}) if leakage else []
    head = (["strategy", "accuracy"] + [f"acc {c}" for c in clients]
            + ["MB up", "MB down"] + [f"AUC {a}" for a in attacks])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [LABELS.get(name, name), f"{s['accuracy']:.3f}"]
        cells += [f"{s['client_accuracy'].get(str(i), float('nan')):.3f}"
                  for i in range(len(clients))]
        cells += [_mb(s["bytes_up"]), _mb(s["bytes_down"])]
        cells += [f"{(leakage or {}).get(name, {}).get(a, float('nan')):.3f}" for a in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Accuracy vs round and vs cumulative training bytes (up + down), one line per strategy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["strategy"] for r in rows):
        mine = sorted((r for r in rows if r["strategy"] == name), key=lambda r: r["round"])
        rounds = [r["round"] for r in mine]
        acc = [r["accuracy"] for r in mine]
        cum = np.cumsum([r["bytes_up"] + r["bytes_down"] for r in mine])
        a.plot(rounds, acc, marker="o", label=LABELS.get(name, name))
        b.plot(cum, acc, marker="o", label=LABELS.get(name, name))
    a.set(xlabel="round", ylabel="validation accuracy (all clients)", title="accuracy vs rounds")
    b.set(xlabel="cumulative bytes (up + down, training messages)", xscale="log",
          title="accuracy vs communication")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_wandb(cfg, rows: list[dict], run_dir: Path, resolved: dict) -> None:
    """One wandb run; per strategy `<strategy>/accuracy`, `/bytes`, `/client<i>` at step round."""
    if cfg.wandb.mode == "disabled":
        return
    from specaware.tracking import Tracker
    tracker = Tracker(cfg.wandb, run_dir / "wandb", resolved, is_main=True)
    cum: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r["round"]):
        s = r["strategy"]
        cum[s] = cum.get(s, 0) + r["bytes_up"] + r["bytes_down"]
        metrics = {f"{s}/accuracy": r["accuracy"], f"{s}/cumulative_bytes": cum[s]}
        metrics.update({f"{s}/client{k}": v["accuracy"] for k, v in r["clients"].items()})
        tracker.log(metrics, step=r["round"])
    tracker.finish()

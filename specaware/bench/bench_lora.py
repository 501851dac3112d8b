"""Parameter-efficient fine-tuning on the demo tasks: trainable parameters and test metrics of
model.freeze = encoder (linear probe / frozen features), lora (finetune/lora.py, rank 8 on
attention, dense MLP and Soft-MoE experts) and none (everything trains), side by side (issue 18).

Each mode runs the demo's own fine-tuning configs (configs/demo/<task>.yaml) on the demo's data
with its pretrained export, the same seeds and epochs, so only `model.freeze` differs. Without a
demo folder it first runs `specaware demo --quick` into a temporary folder (a few minutes).

    PYTHONPATH=. .venv/bin/python bench/bench_lora.py demo_out [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from specaware.bench.demo_data import demo_folder
from specaware.config import build
from specaware.demo import downstream
from specaware.demo.plan import CONFIG_DIR, QUICK
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.metrics import HEADLINE
from specaware.finetune.runner import run

MODES = ("encoder", "lora", "none")
TASKS = ("classification", "segmentation", "change")


def _demo_settings(demo: Path) -> tuple[str, int, int]:
    """(sensor, class tile, epochs) the demo folder was made with, from its task-data stage
    record; a quick demo (tile 8) fine-tunes for its 8 epochs, the full one for the configs'."""
    record = demo / ".stages" / "task-data.json"
    if not record.is_file():
        raise SystemExit(f"{demo}: no .stages/task-data.json; pass a `specaware demo` folder "
                         "whose task-data stage finished")
    params = json.loads(record.read_text())["params"]
    quick = params["tile"] == QUICK["class_tile"]
    return params["sensor"], params["tile"], QUICK["finetune_epochs"] if quick else 0


def measure(demo: Path, out: Path, seeds: list[int], tile: int, epochs: int,
            sensor: str) -> list[dict]:
    data = downstream.select(demo / "data" / "synth", sensor)
    rows = []
    for task in TASKS:
        items = downstream.overrides(task, data, demo / "data" / "class_tiles", tile)
        for mode in MODES:
            extra = [f"model.checkpoint={demo / 'export' / 'specaware_demo.safetensors'}",
                     "model.init=pretrained", f"out={out / task / mode}", "progress=false",
                     f"protocol.seeds=[{','.join(map(str, seeds))}]", f"model.freeze={mode}"]
            extra += [f"optim.epochs={epochs}"] if epochs else []
            cfg = build(FinetuneConfig, [Path(CONFIG_DIR) / f"{task}.yaml"], items + extra)
            began = time.perf_counter()
            summary = run(cfg)["pretrained"]
            record = json.loads((out / task / mode / "pretrained" / f"seed{seeds[0]}" /
                                 "metrics.json").read_text())
            rows.append({"task": task, "mode": mode, **record["parameters"],
                         "metric": HEADLINE[task], "mean": summary[HEADLINE[task]][0],
                         "std": summary[HEADLINE[task]][1],
                         "s": time.perf_counter() - began})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", nargs="?", type=Path, help="a `specaware demo` output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed (with a quick demo)")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    with tempfile.TemporaryDirectory() as tmp:
        demo = demo_folder(args.demo, Path(tmp))
        sensor, tile, epochs = _demo_settings(demo)
        rows = measure(demo, Path(tmp) / "runs", seeds, tile, epochs, sensor)
    print(f"demo {demo}: {sensor}, seeds {seeds}, pretrained encoder; test metric mean ± std")
    print(f"{'task':<15}{'freeze':<9}{'trainable':>11}{'of total':>10}{'metric':>9}"
          f"{'test (%)':>16}{'time (s)':>10}")
    for r in rows:
        print(f"{r['task']:<15}{r['mode']:<9}{r['trainable']:>11,}"
              f"{r['trainable'] / r['total']:>10.1%}{r['metric']:>9}"
              f"{100 * r['mean']:>10.1f} ± {100 * r['std']:<4.1f}{r['s']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

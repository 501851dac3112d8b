"""Pruning bench (issue 21): pretrain on 100 % / the pruned 50 % (`specaware curate`) / a
random 50 % of the demo shards for the same number of steps, then fine-tune the demo's scene
classification on each export; prints the downstream OA side by side.

Each seed is one replicate of the whole chain: the k-means seed of the pruning, the random
half, the pretraining seed and the fine-tuning seed all change with it, so the spread over seeds
includes pretraining noise (a fine-tuning seed alone would understate it). The per-seed
difference pruned - random is printed too: it is the paired comparison the claim rests on.

Without a demo folder it first runs `specaware demo --quick` into a temporary folder.

    PYTHONPATH=. .venv/bin/python bench/bench_curate.py demo_out [--steps 200] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from specaware.bench.demo_data import demo_folder
from specaware.config import build
from specaware.data.prune import prune_shards
from specaware.data.shard import read_manifest
from specaware.demo.plan import CONFIG_DIR, QUICK
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.runner import run


def keys_files(shards: Path, out: Path, seed: int) -> dict[str, str]:
    """'' (all tiles), the pruned half and a random half of the same size, as KEYS.json."""
    pruned = prune_shards(shards, out / "pruned.json", 0.5, 6, seed, drop_quantile=0.05)
    keys = [str(r["key"]) for r in read_manifest(shards)["tiles"]]
    pick = np.random.default_rng(seed).choice(len(keys), len(pruned["keys"]), replace=False)
    (out / "random.json").write_text(json.dumps({"keys": [keys[i] for i in sorted(pick)]}))
    return {"100 %": "", "pruned 50 %": str(out / "pruned.json"),
            "random 50 %": str(out / "random.json")}


def pretrain_and_export(shards: Path, keys: str, run_dir: Path, steps: int, seed: int) -> Path:
    items = [str(Path(CONFIG_DIR) / "pretrain.yaml"), f"data.shards={shards}",
             f"checkpoint.run_dir={run_dir}", f"train.steps={steps}",
             f"checkpoint.every={steps}", f"wandb.panel_every={steps}", f"train.seed={seed}"]
    items += [f"data.curation.keys_file={keys}"] if keys else []
    env = dict(os.environ, OMP_NUM_THREADS="2", WANDB_MODE="disabled")
    subprocess.run([sys.executable, "-m", "specaware.training", *items], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    export = run_dir.parent / f"{run_dir.name}.safetensors"
    subprocess.run([sys.executable, "-m", "specaware.cli", "export", str(run_dir), str(export)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return export


def downstream_oa(demo: Path, export: Path, out: Path, seeds: list[int]) -> tuple[float, float]:
    cfg = build(FinetuneConfig, [Path(CONFIG_DIR) / "classification.yaml"], [
        f"data.root={demo / 'data' / 'class_tiles'}", f"protocol.tile={QUICK['class_tile']}",
        f"model.checkpoint={export}", f"out={out}", "progress=false",
        f"optim.epochs={QUICK['finetune_epochs']}",
        f"protocol.seeds=[{','.join(map(str, seeds))}]"])
    return tuple(run(cfg)["pretrained"]["oa"])


def replicate(demo: Path, work: Path, steps: int, seed: int) -> dict[str, tuple[float, float]]:
    """arm -> (scene-classification OA, seconds) of one seed of the whole chain."""
    shards, out = demo / "data" / "shards", work / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for arm, keys in keys_files(shards, out, seed).items():
        began, slug = time.perf_counter(), arm.split()[0]
        export = pretrain_and_export(shards, keys, out / f"pre_{slug}", steps, seed)
        oa = downstream_oa(demo, export, out / f"ft_{slug}", [seed])[0]
        result[arm] = (oa, time.perf_counter() - began)
        print(f"  seed {seed}  {arm:<12} OA {100 * oa:5.1f} %  {result[arm][1]:.0f} s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", nargs="?", type=Path, help="a `specaware demo --quick` folder")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="10 steps, one seed")
    args = parser.parse_args()
    steps, seeds = (10, args.seeds[:1]) if args.quick else (args.steps, args.seeds)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        demo = demo_folder(args.demo, Path(tmp))
        runs = [replicate(demo, Path(tmp), steps, seed) for seed in seeds]
    oa = {arm: np.array([r[arm][0] for r in runs]) for arm in runs[0]}
    secs = {arm: np.mean([r[arm][1] for r in runs]) for arm in runs[0]}
    base = oa["100 %"].mean()
    print(f"pretraining {steps} steps per arm, scene classification OA over seeds {seeds} "
          f"(mean ± std; {time.perf_counter() - began:.0f} s in all)")
    for arm, values in oa.items():
        print(f"  {arm:<12} OA {100 * values.mean():5.1f} ± {100 * values.std():4.1f} %  "
              f"(x{values.mean() / base:.2f} of 100 %)  {secs[arm]:.0f} s per seed")
    diff = 100 * (oa["pruned 50 %"] - oa["random 50 %"])
    print(f"  pruned - random per seed: {' '.join(f'{d:+.1f}' for d in diff)} points "
          f"(mean {diff.mean():+.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

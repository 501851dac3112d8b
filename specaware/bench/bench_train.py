"""Pretraining throughput: tiles/s and step time of real `specaware pretrain` runs (issue 5).

Writes a shard set of 128x128 AVIRIS-Classic tiles (224 bands, smooth mixed spectra, absorption
bands flagged) to a temp dir, then launches the real trainer with torchrun, side by side in one
run:
- CPU: the `debug` and `small` configs with 1 and 2 processes (gloo, fp32), one OMP thread per
  process (`--threads`), so 2 processes use twice the cores. Per-process batch is the config's
  (small: 2 tiles on CPU, 128x128 crops, its cross-sensor views; `--quick` crops 32 / 64 px
  so the smoke run stays near a minute: its figures are not the full ones), so 2 processes train a
  global batch twice as large; the ratio 2-proc / 1-proc of tiles/s is the data-parallel
  speed-up on this machine (2.0 = perfect); with 2 processes also `deepspeed.expert_parallel=2`
  (each rank holds half of every Soft-MoE layer's experts, slots exchanged by all-to-all):
  tiles/s and the parameter memory one process holds, against expert_parallel 1;
- GPU (only when CUDA is available): `base` in bf16 on one GPU, batch 64, its views; tiles/s,
  step time and model FLOPs utilisation (forward+backward = 3x forward FLOPs of
  `model_stats`, against the GPU's dense bf16 peak from specaware.tracking); with 2
  or more GPUs also `base` with 32 experts split over 2 GPUs against the dense `base`.
Figures come from the `summary.json` the trainer writes: medians over logged steps, the first
(start-up) step left out; loader time is included, checkpoints and panels are not.

    PYTHONPATH=. .venv/bin/python bench/bench_train.py [--quick]
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

from specaware.data.codec import encode_sample
from specaware.data.sample import make_sample
from specaware.data.shard import ShardWriter, make_key
from specaware.resources import config_path
from specaware.sensors import get_sensor

CONFIGS = config_path("pretrain")
TILE = 128          # px; the configs with views crop 128

# Per case: config file, the overrides that make it fit a CPU, steps (full, --quick) and the
# crop of --quick (smaller tiles so the smoke run takes about a minute; 0 = the config's).
CPU_CASES = {
    "debug": ("debug.yaml", [], (20, 6), 32),
    "small": ("small.yaml", ["data.batch_size=2", "data.num_workers=1", "data.shuffle_buffer=16",
                             "deepspeed.precision=fp32"], (8, 3), 64),
}
# the bench shards carry no descriptors: base.yaml's curation is switched off
GPU_CASE = ("base.yaml", ["deepspeed.precision=bf16", "data.shuffle_buffer=64",
                          "data.curation.balance=[]", "data.curation.drop_quantile=null"])


def write_shards(out: Path, tiles: int, size: int = TILE, seed: int = 0) -> None:
    """`tiles` AVIRIS-Classic reflectance tiles: three smooth spectra mixed by smooth fields."""
    sensor = get_sensor("aviris-classic")
    rng = np.random.default_rng(seed)
    wl = sensor.wavelength.astype(np.float64)
    band_valid = ~sensor.absorption_mask()
    yy, xx = np.mgrid[0:size, 0:size] / size
    with ShardWriter(out, shard_size=8) as writer:
        for i in range(tiles):
            centres = rng.uniform(500, 2200, 3)
            spectra = np.stack([0.05 + 0.4 * np.exp(-((wl - c) / rng.uniform(150, 600)) ** 2)
                                for c in centres])                        # [3, C]
            fields = np.stack([np.exp(np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(
                0.5, 3) * yy) + rng.uniform(0, 6.3))) for _ in range(3)])
            abundance = fields / fields.sum(0)                            # [3, H, W]
            cube = np.einsum("kc,khw->chw", spectra, abundance).astype(np.float32)
            cube += rng.normal(0, 0.003, cube.shape).astype(np.float32)
            key = make_key("bench-train", row=i * size, col=0)
            sample = make_sample(cube, sensor.wavelength, sensor.fwhm, valid=None, gsd=15.0,
                                 sensor=sensor.name, level="L2", meta={"key": key})
            writer.add(key, encode_sample(sample, dtype="int16", band_valid=band_valid),
                       row={"sensor": sensor.name, "bands": sensor.num_bands, "descriptors": {}})


def launch(config: str, overrides: list[str], nproc: int, threads: int, run_dir: Path,
           timeout: int) -> dict:
    """One torchrun launch of the trainer; returns its summary.json (or an 'error' entry)."""
    items = [str(CONFIGS / config), *overrides, f"checkpoint.run_dir={run_dir}",
             "checkpoint.enabled=false", "wandb.mode=disabled", "wandb.panel_every=0",
             "train.log_every=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(nproc), "-m", "specaware.training", *items]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(threads), WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    summary_path = run_dir / "summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        return {"error": f"rc {proc.returncode}: " + " / ".join(tail)}
    summary = json.loads(summary_path.read_text())
    summary["launch_s"] = time.perf_counter() - start
    return summary


def cpu_section(shards: Path, work: Path, args) -> list[dict]:
    rows = []
    for name, (config, extra, (full, quick), quick_crop) in CPU_CASES.items():
        steps = args.steps or (quick if args.quick else full)
        crop = quick_crop if args.quick else 0
        for nproc, ep in ((1, 1), (2, 1), (2, 2)):
            threads = args.threads
            overrides = [f"data.shards={shards}", f"train.steps={steps}", *extra,
                         f"deepspeed.expert_parallel={ep}"] + (
                [f"data.views.crop={crop}"] if crop else [])
            result = launch(config, overrides, nproc, threads, work / f"{name}-{nproc}-ep{ep}",
                            args.timeout)
            rows.append({"case": name, "device": "cpu", "procs": nproc, "threads": threads,
                         "ep": ep, "steps": steps, "tile": crop or TILE, **result})
            print(f"  measured {name} x{nproc} expert_parallel={ep}: {_fmt(rows[-1])}",
                  flush=True)
    return rows


def gpu_experts_section(shards: Path, work: Path, args) -> list[dict]:
    """`base` with 32 experts split over 2 GPUs (expert_parallel 2) against the dense `base`
    (no Soft-MoE block) on the same 2 GPUs, bf16."""
    import torch
    if torch.cuda.device_count() < 2:
        print("fewer than 2 GPUs: expert-parallel GPU figures (base, 32 experts) not measured")
        return []
    config, extra = GPU_CASE
    steps = args.steps or (10 if args.quick else 40)
    workers = max(1, min(4, (os.cpu_count() or 2) // 2 - 1))
    cases = {"base-e32": ["model.overrides.moe.num_experts=32", "deepspeed.expert_parallel=2"],
             "base-dense": ["model.overrides.moe.blocks=[]"]}
    rows = []
    for name, case in cases.items():
        overrides = [f"data.shards={shards}", f"train.steps={steps}",
                     f"data.num_workers={workers}", *extra, *case]
        result = launch(config, overrides, 2, max(1, (os.cpu_count() or 2) // 4),
                        work / f"{name}-gpu", args.timeout)
        rows.append({"case": name, "device": torch.cuda.get_device_name(0), "procs": 2,
                     "threads": "-", "ep": 2 if "e32" in name else 1, "steps": steps,
                     "tile": TILE, **result})
        print(f"  measured {name} on 2 GPUs: {_fmt(rows[-1])}", flush=True)
    return rows


def gpu_section(shards: Path, work: Path, args) -> list[dict]:
    import torch
    if not torch.cuda.is_available():
        print("no GPU available: GPU figures not measured")
        return []
    config, extra = GPU_CASE
    steps = args.steps or (10 if args.quick else 40)
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    overrides = [f"data.shards={shards}", f"train.steps={steps}",
                 f"data.num_workers={workers}", *extra]
    result = launch(config, overrides, 1, max(1, (os.cpu_count() or 1) // 2), work / "base-gpu",
                    args.timeout)
    row = {"case": "base", "device": torch.cuda.get_device_name(0), "procs": 1,
           "threads": "-", "ep": 1, "steps": steps, "tile": TILE, **result}
    print(f"  measured base on GPU: {_fmt(row)}", flush=True)
    return [row]


def _fmt(row: dict) -> str:
    if "error" in row:
        return f"FAILED ({row['error'][:300]})"
    mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") else "n/a"
    return (f"{row['tiles_per_s']:.2f} tiles/s, {row['step_time_s']:.3f} s/step, MFU {mfu}, "
            f"launch {row['launch_s']:.0f} s")


def report(rows: list[dict]) -> None:
    print(f"\n{'case':<10} {'device':<24} {'procs':>5} {'EP':>3} {'thr':>4} {'tile':>5} "
          f"{'batch':>9} {'tiles/s':>9} {'s/step':>8} {'MFU':>7} {'params/rank':>12} "
          f"{'experts/rank':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<10} {r['device']:<24} {r['procs']:>5} {r['ep']:>3} "
                  f"{r['threads']:>4}  FAILED")
            continue
        batch = f"{r['batch_size']}x{r['world_size']}"
        mfu = f"{100 * r['mfu']:.2f}%" if r.get("mfu") else "-"
        print(f"{r['case']:<10} {r['device'][:24]:<24} {r['procs']:>5} {r['ep']:>3} "
              f"{r['threads']:>4} {r['tile']:>5} {batch:>9} {r['tiles_per_s']:>9.2f} "
              f"{r['step_time_s']:>8.3f} {mfu:>7} {_mb(r.get('param_bytes')):>12} "
              f"{_mb(r.get('expert_param_bytes')):>13}")
    print("(params/rank: the module weights one process holds; ZeRO's partitioned fp32 masters "
          "and Adam moments come on top)\n")
    ok = {(r["case"], r["procs"], r["ep"]): r for r in rows if "error" not in r}
    for case in CPU_CASES:
        one, two, split = ok.get((case, 1, 1)), ok.get((case, 2, 1)), ok.get((case, 2, 2))
        if one and two:
            print(f"{case}: 2-proc / 1-proc tiles/s = "
                  f"{two['tiles_per_s'] / one['tiles_per_s']:.2f} (2.0 = perfect scaling)")
        if two and split:
            print(f"{case}, 2 procs, expert_parallel 2 / 1: tiles/s "
                  f"{split['tiles_per_s'] / two['tiles_per_s']:.2f}, parameter bytes per rank "
                  f"{split['param_bytes'] / two['param_bytes']:.2f} (expert weights "
                  f"{split['expert_param_bytes'] / two['expert_param_bytes']:.2f})")
    e32, dense = ok.get(("base-e32", 2, 2)), ok.get(("base-dense", 2, 1))
    if e32 and dense:
        print(f"base on 2 GPUs, 32 experts split 2 ways / dense: tiles/s "
              f"{e32['tiles_per_s'] / dense['tiles_per_s']:.2f}, parameter bytes per rank "
              f"{e32['param_bytes'] / dense['param_bytes']:.2f}")


def _mb(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, 16 tiles (~1 minute)")
    parser.add_argument("--steps", type=int, default=0, help="steps per run (default by size)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per launch")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP threads per CPU process (default 1: N processes use N cores)")
    parser.add_argument("--keep", default="", help="keep the shards and runs in this folder")
    args = parser.parse_args(argv)
    import torch
    tiles = 64 if torch.cuda.is_available() else (16 if args.quick else 32)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(args.keep or tmp)
        shards = work / "shards"
        if not (shards / "manifest.json").is_file():
            write_shards(shards, tiles)
        print(f"pretraining throughput on {tiles} tiles of 128x128 px x 224 bands "
              f"({os.cpu_count()} CPU cores)", flush=True)
        rows = (cpu_section(shards, work, args) + gpu_section(shards, work, args)
                + gpu_experts_section(shards, work, args))
        report(rows)
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

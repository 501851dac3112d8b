"""Launching real pretraining runs from the tests, and reading back what they wrote.

Every distributed run is a subprocess (torchrun, the deepspeed launcher, or the plain CLI) of the
real `specaware_debug` model on shards written by `specaware.testing.write_tiny_shards`, with one
CPU thread per process. Runs are expensive (start-up dominates), so test modules share them
through module-scoped fixtures (see conftest.py) and assert several behaviours on each.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBUG_YAML = str(REPO / "configs" / "pretrain" / "debug.yaml")
RUN_TIMEOUT_S = 240

# A short, fast schedule of the debug config: 12 steps, checkpoints at 6 and 12.
STEPS, EVERY = 12, 6
FAST = [f"train.steps={STEPS}", f"checkpoint.every={EVERY}", "checkpoint.keep_last=0",
        "train.log_every=1", "data.num_workers=0", "optim.lr=3e-3", "optim.warmup_steps=2",
        "wandb.panel_every=0"]


@dataclass
class RunResult:
    """A finished (or killed) launch: return code, output, and the run folder."""
    returncode: int
    output: str
    run_dir: Path

    def losses(self) -> dict[int, float]:
        """step -> logged loss (rank 0's metrics.jsonl)."""
        return {r["step"]: r["loss"] for r in self.records()}

    def records(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def check(self) -> "RunResult":
        assert self.returncode == 0, f"run failed (rc {self.returncode}):\n{self.output[-4000:]}"
        return self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_env(fault: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in
           ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SPECAWARE_FAULT")
           and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE=env.get("WANDB_MODE", "offline"),
               WANDB_SILENT="true", PYTHONUNBUFFERED="1", **extra)
    if fault:
        env["SPECAWARE_FAULT"] = fault
    return env


def launch(run_dir: Path, items: list[str], *, nproc: int = 2, launcher: str = "torchrun",
           fault: str | None = None, resume: str | None = None,
           timeout: int = RUN_TIMEOUT_S) -> RunResult:
    """Run `specaware pretrain` over `items` (configs + key=value) with `nproc` processes.

    launcher: "torchrun" (python -m torch.distributed.run), "torchrun.sh" / "deepspeed.sh"
    (the scripts of launch/), "slurm" (launch/slurm/pretrain.sbatch with a stand-in srun), or
    "plain" (one process, no launcher: the console script).
    """
    args = [*items, f"checkpoint.run_dir={run_dir}"] + (["--resume", resume] if resume else [])
    env = run_env(fault)
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", str(nproc), "--rdzv_backend", "c10d",
               "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "-m", "specaware.training", *args]
    elif launcher in ("torchrun.sh", "deepspeed.sh"):
        script = REPO / "launch" / f"pretrain_{launcher.removesuffix('.sh')}.sh"
        env.update(NPROC=str(nproc), PYTHON=sys.executable, MASTER_PORT=str(free_port()),
                   DEEPSPEED=str(Path(sys.executable).parent / "deepspeed"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
        env.pop("HOSTFILE", None)
        cmd = ["bash", str(script), *args]
    elif launcher == "slurm":
        # the sbatch script as Slurm would run it, with srun/scontrol stand-ins on PATH
        fake = Path(__file__).resolve().parent / "fake_slurm"
        env.update(SLURM_NTASKS=str(nproc), SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost",
                   SLURM_CPUS_PER_TASK="1", MASTER_PORT=str(free_port()), PYTHON=sys.executable,
                   PATH=f"{fake}{os.pathsep}{env.get('PATH', '')}")
        cmd = ["bash", str(REPO / "launch" / "slurm" / "pretrain.sbatch"), *args]
    elif launcher == "plain":
        cmd = [str(Path(sys.executable).parent / "specaware"), "pretrain", *args]
    else:
        raise ValueError(f"unknown launcher {launcher!r}")
    proc = subprocess.run(cmd, cwd=run_dir.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return RunResult(proc.returncode, proc.stdout + proc.stderr, run_dir)

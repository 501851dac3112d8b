"""`specaware bench`: run the benchmark scripts in `bench/` one after another.

Each script measures its subject side by side with a baseline in one run and prints the ratio,
so the numbers are comparable on whatever machine runs them. The scripts ship inside the package
(`specaware/bench/`; `bench/` in a clone links there), so this runs from any folder.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time

from specaware.resources import BENCH_DIR


def available() -> list[str]:
    if not BENCH_DIR.is_dir():
        return []
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--remote", action="store_true", help="loader: stream shards from "
                        "loopback HTTP / S3 servers against local reads (passed to the scripts "
                        "that take it)")


def machine_line() -> str:
    try:
        import torch
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        dev, tv = "torch missing", "-"
    return (f"machine: {platform.machine()} {os.cpu_count()} CPU cores, {dev}; "
            f"python {platform.python_version()}, torch {tv}")


# Kineto (the torch profiler's backend) writes a trace line per profiler start and stop straight
# to stderr; bench model profiles every case, so they drowned its figures. Its other messages
# (warnings, errors) still pass.
_PROFILER_NOISE = re.compile(r"^USDT:.*\] profiler_(start|stop)\s*$")


def is_profiler_noise(line: str) -> bool:
    return bool(_PROFILER_NOISE.match(line))


def run_filtered(cmd: list[str], env: dict) -> int:
    """Run a benchmark, passing its output through line by line minus the profiler's trace."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            if not is_profiler_noise(line):
                print(line, end="", flush=True)
        return proc.wait()


def main(args) -> int:
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    print(machine_line(), flush=True)
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failed = []
    for name in names:
        cmd = [sys.executable, str(BENCH_DIR / f"bench_{name}.py")] + (["--quick"] if args.quick else [])
        if getattr(args, "remote", False):
            if name != "loader":
                print(f"error: --remote applies to `bench loader` only, not {name}",
                      file=sys.stderr)
                return 2
            cmd.append("--remote")
        print(f"\n=== bench {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = run_filtered(cmd, env)
        print(f"=== bench {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0

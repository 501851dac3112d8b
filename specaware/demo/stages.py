"""Stage bookkeeping of the demo: each stage prints what it does, times itself, and leaves a
marker `<out>/.stages/<name>.json` holding its parameters and the markers of its inputs.
A later run whose parameters (and inputs) are unchanged reuses the stage's outputs; `--fresh`
removes the markers and outputs so everything runs again.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class StageError(RuntimeError):
    """A stage failed; the message names the stage, its log and how to retry."""


@dataclass
class StageResult:
    name: str
    seconds: float
    reused: bool
    info: dict = field(default_factory=dict)


class Stages:
    """Runs named stages under one output folder and keeps their timings in order."""

    def __init__(self, out: Path, fresh: bool = False):
        self.out = Path(out)
        self.markers = self.out / ".stages"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.fresh = fresh
        self.results: list[StageResult] = []

    def _marker(self, name: str) -> Path:
        return self.markers / f"{name}.json"

    def stamp(self, name: str) -> str:
        """Completion time of a finished stage ('' if it never finished): a downstream stage
        lists its inputs' stamps among its parameters, so re-running an input invalidates it."""
        path = self._marker(name)
        return json.loads(path.read_text()).get("finished", "") if path.exists() else ""

    def run(self, name: str, what: str, params: dict, outputs: list[Path],
            fn: Callable[[], dict | None]) -> StageResult:
        """Run `fn` unless a marker with the same params exists and every output is present."""
        marker = self._marker(name)
        params = json.loads(json.dumps(params, default=str))
        if not self.fresh and marker.exists():
            old = json.loads(marker.read_text())
            if old.get("params") == params and all(Path(p).exists() for p in outputs):
                print(f"[{name}] reusing {what} from a previous run "
                      f"(took {old['seconds']:.1f} s then; --fresh to redo)", flush=True)
                result = StageResult(name, old["seconds"], True, old.get("info", {}))
                self.results.append(result)
                return result
        marker.unlink(missing_ok=True)
        for p in outputs:  # a stage starts from nothing: no half-finished leftovers
            _remove(Path(p))
        print(f"\n[{name}] {what} ...", flush=True)
        start = time.perf_counter()
        info = fn() or {}
        seconds = time.perf_counter() - start
        marker.write_text(json.dumps({"params": params, "seconds": seconds, "info": info,
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")
                                      + f"-{time.perf_counter_ns()}"}, indent=1, default=str))
        print(f"[{name}] done in {seconds:.1f} s", flush=True)
        result = StageResult(name, seconds, False, info)
        self.results.append(result)
        return result

    def timing_table(self) -> str:
        rows = [(r.name, f"{r.seconds:7.1f} s", "reused" if r.reused else "ran")
                for r in self.results]
        total = sum(r.seconds for r in self.results if not r.reused)
        width = max([len(n) for n, _, _ in rows] + [11])
        lines = [f"{n:<{width}} {s}  {how}" for n, s, how in rows]
        return "\n".join(lines + [f"{'total (ran)':<{width}} {total:7.1f} s"])


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_command(cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> None:
    """Run `cmd`, echoing its output to the terminal and to `log_path`; raise on failure."""
    print("  $ " + " ".join(cmd), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
            cwd=cwd, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            if _worth_echoing(line):
                sys.stdout.write("  | " + line)
                sys.stdout.flush()
        code = proc.wait()
    if code != 0:
        raise StageError(f"command failed with exit code {code}: {' '.join(cmd)}\n"
                         f"full output: {log_path}")


def _worth_echoing(line: str) -> bool:
    """Progress lines and problems; DeepSpeed's start-up chatter stays in the log file."""
    noisy = ("[real_accelerator.py", "DeepSpeed deepspeed.ops", "[INFO] [", "[config.py",
             "[logging.py", "[engine.py", "[utils.py", "[torch.py")
    return not any(n in line for n in noisy)

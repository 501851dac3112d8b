"""Deterministic fault injection for the crash/resume and non-finite tests.

`SPECAWARE_FAULT=POINT:STEP` (unset in normal runs):
- "step": the process dies at once (no clean-up, no flush: like a SIGKILL or a lost node)
  after optimizer step STEP completed;
- "save": it dies in the middle of writing checkpoint STEP (heavy files written, no marker);
- "nan": the last rank alone sees a NaN loss in the first micro-batch of step STEP (0-based
  step index), which every rank must then skip together.
"""
from __future__ import annotations

import os

EXIT_CODE = 86


def _armed(point: str, step: int) -> bool:
    spec = os.environ.get("SPECAWARE_FAULT", "")
    return bool(spec) and spec == f"{point}:{step}"


def fault_point(point: str, step: int) -> None:
    if _armed(point, step):
        os._exit(EXIT_CODE)


def nan_injected(step: int, rank: int, world_size: int) -> bool:
    """True once per process for the "nan" fault: on the last rank at step `step`."""
    global _nan_done
    if _nan_done or rank != world_size - 1 or not _armed("nan", step):
        return False
    _nan_done = True
    return True


_nan_done = False

"""Deterministic fault injection for the crash/resume tests.

`SPECAWARE_FAULT=POINT:STEP` makes the process die at once (no clean-up, no flush: like a
SIGKILL or a lost node) when it reaches POINT at STEP. Points: "step" (after optimizer step
STEP completed), "save" (in the middle of writing checkpoint STEP). Unset in normal runs.
"""
from __future__ import annotations

import os

EXIT_CODE = 86


def fault_point(point: str, step: int) -> None:
    spec = os.environ.get("SPECAWARE_FAULT", "")
    if spec and spec == f"{point}:{step}":
        os._exit(EXIT_CODE)

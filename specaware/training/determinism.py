"""`train.deterministic: true`: the same seed gives the same run, bit for bit, on one machine.

What it switches on (PyTorch's reproducibility notes, "Reproducibility" in the docs):
  - `torch.use_deterministic_algorithms(True)`: every op takes its deterministic kernel, and an
    op that has none on the device raises a RuntimeError naming it instead of silently varying;
  - cuDNN: `deterministic = True` and `benchmark = False` (autotuning may pick a different
    algorithm on every run);
  - cuBLAS: `CUBLAS_WORKSPACE_CONFIG=:4096:8`, which CUDA >= 10.2 needs for deterministic
    matmuls; it must be in the environment before the first cuBLAS call, so `run` applies this
    first thing.
Seeds are not set here: the trainer seeds every process from `train.seed` in any case.
What the flag does not buy (README, "Determinism"): equality across GPU models, library
versions, world sizes or ZeRO stages, whose reduction orders differ.
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"


def make_deterministic() -> None:
    """Switch this process to deterministic kernels (see the module doc). Idempotent."""
    current = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if current not in (":4096:8", ":16:8"):
        if current:
            log.warning("CUBLAS_WORKSPACE_CONFIG=%s does not make cuBLAS deterministic; "
                        "using %s", current, CUBLAS_WORKSPACE)
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    log.info("train.deterministic: deterministic algorithms on, cuDNN autotuning off, "
             "CUBLAS_WORKSPACE_CONFIG=%s", os.environ["CUBLAS_WORKSPACE_CONFIG"])

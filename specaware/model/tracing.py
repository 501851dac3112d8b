"""Whether the model is being traced into a graph (torch.export, torch.compile, ONNX, jit).

Eager code may branch on tensor values (`bool(t.any())`) to take fast paths or to raise a
clear error; a traced graph cannot, since the branch would be frozen at the example's value
or fail on a symbolic value. Code with such a branch asks `is_tracing()` and takes a
branch-free path (`torch.where`, always the general case) that gives the same result.
"""
from __future__ import annotations

import torch


def is_tracing() -> bool:
    """True inside torch.export / torch.compile (dynamo), ONNX export or jit tracing."""
    compiler = getattr(torch, "compiler", None)
    for name in ("is_exporting", "is_compiling", "is_dynamo_compiling"):
        probe = getattr(compiler, name, None)
        if probe is not None and probe():
            return True
    if torch.jit.is_tracing():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())

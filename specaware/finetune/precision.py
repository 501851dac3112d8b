"""`precision: bf16 | fp32` for fine-tuning and prediction.

bf16 runs the forward pass under autocast: matmuls and attention in bfloat16, while autocast
keeps LayerNorm, softmax and reductions in fp32. Everything else stays fp32 on purpose:
the weights and AdamW's moments (bf16 updates of small learning rates round to nothing), the
normalisation statistics (fitted in numpy before the model), and the loss and metrics (logits
are cast to fp32 before cross-entropy, softmax and argmax). bf16 has fp32's exponent range, so
no loss scaling is needed (unlike fp16).

On a CPU, bf16 uses torch's CPU autocast: numerically the same recipe, but slow on CPUs without
bf16 matrix units; it is meant for GPUs.
"""
from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device):
    """Context for the forward pass: bf16 autocast on `device`, or nothing for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse bf16 where the device has no bf16 support; note CPU bf16 is slow."""
    if precision != "bf16":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 "
                         "support (needs compute capability 8.0+, e.g. A100/H100): use "
                         "precision=fp32")
    if device.type == "cpu":
        log.info("precision=bf16 on CPU: torch CPU autocast (correct, but slow without bf16 "
                 "matrix units); bf16 is meant for GPUs")

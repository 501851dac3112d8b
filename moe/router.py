"""Soft-MoE router: per-sequence dispatch and combine weights (Puigcerver et al. 2024, sec. 2.1-2.3).

For one sequence X [n, d] and slot parameters Phi [d, m] (m = e*s slots):
    logits   = normalize(X) @ (scale * normalize(Phi))     l2 over d, scale learnable, init 1
    dispatch = softmax over tokens (axis n)   -> every slot is a convex mix of the tokens
    combine  = softmax over slots  (axis m)   -> every token output is a convex mix of slot outputs
The router knows nothing about what the experts are or where they live, so the same module serves
the single-process layer (`soft_moe.py`) and the expert-parallel one (`parallel.py`).

Letters: b batch, n tokens, d width, e experts, s slots per expert, m = e*s slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Routing:
    """Weights of one router call. dispatch/combine [b, n, m] in the input dtype.

    dispatch sums to 1 over real tokens for every slot (padded tokens get exactly 0);
    combine sums to 1 over the m slots for every token. logits [b, n, m] float32, or float64
    for float64 input (so the layer can be gradchecked).
    """
    dispatch: Tensor
    combine: Tensor
    logits: Tensor


class SoftRouter(nn.Module):
    """Slot parameters Phi [d, e*s] and the two softmaxes.

    Init (paper): Phi ~ N(0, 1/d), scale = 1. With `normalize=False` the raw dot product is
    used (the paper's ablation; unstable at large d).
    """

    def __init__(self, dim: int, num_experts: int, slots_per_expert: int, normalize: bool = True):
        super().__init__()
        if min(dim, num_experts, slots_per_expert) < 1:
            raise ValueError(f"SoftRouter needs dim, num_experts, slots_per_expert >= 1, got "
                             f"{dim}, {num_experts}, {slots_per_expert}")
        self.dim, self.num_experts, self.slots_per_expert = dim, num_experts, slots_per_expert
        self.normalize = normalize
        self.phi = nn.Parameter(torch.empty(dim, num_experts * slots_per_expert))
        self.scale = nn.Parameter(torch.ones(()))
        self.reset_parameters()

    @property
    def num_slots(self) -> int:
        return self.num_experts * self.slots_per_expert

    def reset_parameters(self) -> None:
        nn.init.normal_(self.phi, std=1.0 / math.sqrt(self.dim))
        nn.init.ones_(self.scale)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Routing:
        """x [b, n, d]; mask bool [b, n] (True = real token) or None -> Routing."""
        logits = self.logits(x)
        dispatch = _masked_softmax_over_tokens(logits, mask)
        combine = logits.softmax(dim=-1)
        return Routing(dispatch.to(x.dtype), combine.to(x.dtype), logits)

    def logits(self, x: Tensor) -> Tensor:
        """x [b, n, d] -> logits [b, n, m], float32 (float64 when x is float64)."""
        # softmaxes in at least float32: bf16 logits lose the small differences the softmax
        # amplifies; float64 stays float64
        wide = torch.promote_types(x.dtype, torch.float32)
        if not self.normalize:
            return torch.matmul(x, self.phi.to(x.dtype)).to(wide)
        phi = F.normalize(self.phi, dim=0).to(x.dtype)               # [d, m], once per call
        # normalize(x) @ (scale * phi) == (x @ phi) * scale / |x|: the scale and the token norms
        # multiply the logits row-wise ([b, n, 1], the smallest operand), which skips the
        # normalised copy of x and F.normalize's long backward on [b, n, d]. 1/max(|x|, eps) as
        # in F.normalize, so an all-zero (padding) token still gets logits 0.
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wide)
        row_scale = self.scale.to(wide) / norm.clamp_min(1e-12)            # [b, n, 1]
        return torch.matmul(x, phi).to(wide) * row_scale

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_experts={self.num_experts}, "
                f"slots_per_expert={self.slots_per_expert}, normalize={self.normalize}")


def _masked_softmax_over_tokens(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over axis n of [b, n, m], padded tokens excluded.

    A finite fill (not -inf) keeps an all-padding sequence finite: its softmax is uniform and
    the final multiplication by the mask makes every weight exactly 0 (no NaN anywhere).
    """
    if mask is None:
        return logits.softmax(dim=1)
    if mask.shape != logits.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool [b, n] = {tuple(logits.shape[:2])}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    real = mask[..., None]
    weights = logits.masked_fill(~real, torch.finfo(logits.dtype).min).softmax(dim=1)
    return weights * real

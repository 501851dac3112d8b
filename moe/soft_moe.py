"""Soft mixture of experts layer (Puigcerver et al., "From Sparse to Soft Mixtures of Experts",
ICLR 2024, Algorithm 1), routed per sequence.

    routing = router(x, mask)                 dispatch, combine [b, n, m]
    slots   = dispatch^T x                    [b, m, d]   each slot a convex mix of real tokens
    outputs = experts(slots)                  expert i sees its s slots of every sample
    y       = combine outputs                 [b, n, d]   each token a convex mix of slot outputs

Routing never mixes the samples of a batch: the two softmaxes run inside each sequence, so a
sample's output does not depend on its batch neighbours (and is deterministic at inference).
Padded tokens get zero dispatch weight and a zero output. No auxiliary loss is needed.

Cost per sequence (multiply-adds): router + dispatch + combine ~ 3 n m d, experts m * 2 d h.
It follows the number of slots m = e*s, not the number of experts.

Letters: b batch, n tokens, d width, h expert hidden width, e experts, s slots per expert,
m = e*s slots.
"""
from __future__ import annotations

from typing import Union

from einops import rearrange
import torch
from torch import Tensor, nn

from .experts import ExpertFactory, make_experts
from .metrics import RoutingMetrics, soft_moe_metrics
from .router import SoftRouter


class SoftMoE(nn.Module):
    """Soft-MoE MLP block: drop-in for a transformer MLP, `y, metrics = layer(x, mask)`.

    Args:
        dim: token width d.
        num_experts: e.
        slots_per_expert: s; the layer processes m = e*s slots per sequence. s*e ~ n gives each
            token about one expert MLP of compute.
        hidden_dim: expert hidden width h.
        expert: "mlp" (GELU), "swiglu", or a factory `(e, d, h) -> module` mapping [e, t, d] -> same.
        normalize: l2-normalise tokens and slot parameters (paper default, keeps large d stable).
    """

    def __init__(self, dim: int, num_experts: int, slots_per_expert: int, hidden_dim: int,
                 expert: Union[str, ExpertFactory] = "mlp", normalize: bool = True):
        super().__init__()
        self.dim, self.num_experts, self.slots_per_expert = dim, num_experts, slots_per_expert
        self.hidden_dim = hidden_dim
        self.router = SoftRouter(dim, num_experts, slots_per_expert, normalize=normalize)
        self.experts = make_experts(expert, num_experts, dim, hidden_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, RoutingMetrics]:
        """x [b, n, d]; mask bool [b, n] (True = real token) -> (y [b, n, d], metrics)."""
        _check_input(x, self.dim)
        routing = self.router(x, mask)
        slots = torch.einsum("bnm,bnd->bmd", routing.dispatch, x)
        outputs = self.run_experts(slots)
        y = torch.einsum("bnm,bmd->bnd", routing.combine, outputs)
        if mask is not None:
            y = y * mask[..., None].to(y.dtype)
        return y, soft_moe_metrics(routing.dispatch, routing.combine, mask, slots, self.num_experts)

    def run_experts(self, slots: Tensor) -> Tensor:
        """slots [b, m, d] -> expert outputs [b, m, d]; expert i gets slots i*s..(i+1)*s-1."""
        b = slots.shape[0]
        rows = rearrange(slots, "b (e s) d -> e (b s) d", e=self.num_experts)
        out = self.experts(rows)
        return rearrange(out, "e (b s) d -> b (e s) d", b=b)

    def flops(self, num_tokens: int) -> dict[str, int]:
        """Multiply-adds per sequence of n tokens: router (logits, dispatch, combine) and experts."""
        m = self.num_experts * self.slots_per_expert
        per_row = getattr(self.experts, "flops_per_row", lambda: 2 * self.dim * self.hidden_dim)()
        return {"router": 3 * num_tokens * m * self.dim, "experts": m * per_row}

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_experts={self.num_experts}, "
                f"slots_per_expert={self.slots_per_expert}, hidden_dim={self.hidden_dim}")


def _check_input(x: Tensor, dim: int) -> None:
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected tokens [b, n, {dim}], got shape {tuple(x.shape)}")

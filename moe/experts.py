"""Expert banks: e independent MLPs stored as batched weights and applied with one bmm each layer.

Every bank maps [e, t, d] -> [e, t, d]: expert i transforms the t rows of x[i]. What the rows are
(Soft-MoE slots of a whole batch, or top-k tokens packed up to capacity) is the caller's business,
and an expert-parallel layer simply holds a bank of its local experts. Any module with the
constructor `(num_experts, dim, hidden_dim)` and that forward can be plugged into the layers.

Init: per expert, the same as a dense layer of that shape (Xavier-uniform weights, zero bias, as
in the MAE ViT), so the dense reference and the experts start from the same distribution.

Letters: e experts, t rows per expert, d width, h hidden width.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def _xavier_(w: Tensor) -> None:
    """Xavier-uniform on each expert's [fan_in, fan_out] matrix of w [e, fan_in, fan_out]."""
    for matrix in w:                       # init only; forward never loops over experts
        nn.init.xavier_uniform_(matrix)


class MLPExperts(nn.Module):
    """e two-layer GELU MLPs d -> h -> d. w1 [e, d, h], b1 [e, h], w2 [e, h, d], b2 [e, d]."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self.w1.data)
        _xavier_(self.w2.data)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def forward(self, x: Tensor) -> Tensor:
        """x [e, t, d] -> [e, t, d]."""
        hidden = torch.baddbmm(rearrange(self.b1, "e h -> e 1 h"), x, self.w1)
        return torch.baddbmm(rearrange(self.b2, "e d -> e 1 d"), F.gelu(hidden), self.w2)

    def flops_per_row(self) -> int:
        """Multiply-adds of one row through one expert (2 matmuls)."""
        return 2 * self.dim * self.hidden_dim


class SwiGLUExperts(nn.Module):
    """e SwiGLU MLPs: (silu(x Wg) * (x Wu)) Wd. w_in [e, d, 2h] (gate, up), w_out [e, h, d]."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim
        self.w_in = nn.Parameter(torch.empty(num_experts, dim, 2 * hidden_dim))
        self.w_out = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gate, up = self.w_in.data.chunk(2, dim=-1)
        for w in (gate, up):
            for matrix in w:
                nn.init.xavier_uniform_(matrix)
        _xavier_(self.w_out.data)

    def forward(self, x: Tensor) -> Tensor:
        """x [e, t, d] -> [e, t, d]."""
        gate, up = torch.bmm(x, self.w_in).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate) * up, self.w_out)

    def flops_per_row(self) -> int:
        return 3 * self.dim * self.hidden_dim


ExpertFactory = Callable[[int, int, int], nn.Module]
EXPERTS: dict[str, ExpertFactory] = {"mlp": MLPExperts, "swiglu": SwiGLUExperts}


def make_experts(expert: Union[str, ExpertFactory], num_experts: int, dim: int,
                 hidden_dim: int) -> nn.Module:
    """Build an expert bank from a name in EXPERTS or a factory `(e, d, h) -> module`."""
    if callable(expert):
        return expert(num_experts, dim, hidden_dim)
    if expert not in EXPERTS:
        raise ValueError(f"unknown expert type {expert!r}; choose one of {sorted(EXPERTS)} "
                         f"or pass a factory (num_experts, dim, hidden_dim) -> nn.Module")
    return EXPERTS[expert](num_experts, dim, hidden_dim)


def shard_experts(bank: nn.Module, rank: int, world_size: int) -> nn.Module:
    """A copy of `bank` holding only experts [rank*e/w, (rank+1)*e/w) (for expert parallelism).

    Works for any bank whose parameters all carry the expert axis first.
    """
    e = bank.num_experts
    if e % world_size:
        raise ValueError(f"{e} experts cannot be split evenly over {world_size} ranks; "
                         f"choose num_experts divisible by the expert-parallel world size")
    local = e // world_size
    shard = make_experts(type(bank), local, bank.dim, bank.hidden_dim)
    with torch.no_grad():
        for name, param in bank.named_parameters():
            shard.get_parameter(name).copy_(param[rank * local:(rank + 1) * local])
    return shard

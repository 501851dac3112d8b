"""Top-k token-choice MoE baseline (Shazeer et al. 2017; GShard; Switch Transformer), with the
same call signature and expert banks as Soft MoE so benchmarks compare like with like.

Every token picks its k highest-probability experts. Each expert accepts at most
C = ceil(capacity_factor * k * n / e) assignments per sequence; the rest are dropped (their
share of the output is 0; the residual connection carries the token). Assignments queue by choice
rank first (all first choices before any second choice), then token order, as in GShard.
Capacity is per sequence and counts real tokens only, so samples never compete for capacity
and padding changes nothing. The Switch load-balancing loss is returned as `metrics.aux_loss`
(unweighted; a trainer adds `coef * aux_loss`, typically coef = 0.01).

Letters: b batch, n tokens, d width, h hidden, e experts, k choices per token, c capacity.
"""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .experts import ExpertFactory, make_experts
from .metrics import RoutingMetrics, topk_metrics


class TopKMoE(nn.Module):
    """Token-choice MoE: `y, metrics = layer(x, mask)`, x [b, n, d], mask bool [b, n] or None.

    Args:
        dim, num_experts, hidden_dim: d, e, h.
        k: experts per token.
        capacity_factor: slack over an even split; None = no capacity limit (nothing dropped).
        expert: "mlp", "swiglu" or a factory `(e, d, h) -> module` on [e, t, d].
        renormalize: for k > 1, rescale the k gates to sum to 1.
    """

    def __init__(self, dim: int, num_experts: int, hidden_dim: int, k: int = 1,
                 capacity_factor: float | None = 1.25, expert: Union[str, ExpertFactory] = "mlp",
                 renormalize: bool = True):
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"TopKMoE needs 1 <= k <= num_experts, got k={k}, e={num_experts}")
        self.dim, self.num_experts, self.hidden_dim, self.k = dim, num_experts, hidden_dim, k
        self.capacity_factor, self.renormalize = capacity_factor, renormalize
        self.gate = nn.Linear(dim, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=1.0 / math.sqrt(dim))
        self.experts = make_experts(expert, num_experts, dim, hidden_dim)

    def capacity(self, num_tokens: int) -> int:
        """Buffer rows per expert and sequence for n tokens."""
        if self.capacity_factor is None:
            return num_tokens
        return min(num_tokens, math.ceil(self.capacity_factor * self.k * num_tokens / self.num_experts))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, RoutingMetrics]:
        b, n, d = x.shape
        if d != self.dim:
            raise ValueError(f"expected tokens [b, n, {self.dim}], got shape {tuple(x.shape)}")
        real = mask if mask is not None else torch.ones(b, n, dtype=torch.bool, device=x.device)
        probs = self.gate(x).float().softmax(dim=-1)                      # [b, n, e]
        gates, index = probs.topk(self.k, dim=-1)                          # [b, n, k]
        if self.renormalize and self.k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        capacity = self.capacity(n)
        row, kept = self._assign(index, real, capacity)
        y = self._dispatch_compute_combine(x, row, kept, gates.to(x.dtype), capacity)
        aux = self._balance_loss(probs, index[..., 0], real)
        return y, topk_metrics(probs, index, kept, mask, aux)

    def _assign(self, index: Tensor, real: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
        """Queue position of every assignment -> (buffer row [b, n, k], kept bool [b, n, k]).

        Buffer rows are laid out (b e c): row = (sample * e + expert) * c + position.
        """
        b, n, k = index.shape
        e = self.num_experts
        onehot = F.one_hot(index, e) * real[..., None, None]               # [b, n, k, e]
        queue = rearrange(onehot, "b n k e -> b (k n) e")                  # choice rank first
        position = rearrange(queue.cumsum(dim=1) - 1, "b (k n) e -> b n k e", k=k)
        position = (position * onehot).sum(-1)                             # [b, n, k]
        limit = self._per_sample_limit(real, capacity)                     # [b]
        kept = real[..., None] & (position < limit[:, None, None])
        sample = torch.arange(b, device=index.device)[:, None, None]
        row = (sample * e + index) * capacity + position
        return row, kept

    def _per_sample_limit(self, real: Tensor, capacity: int) -> Tensor:
        """Capacity of each sample from its real token count (padding never buys capacity)."""
        if self.capacity_factor is None:
            return torch.full((real.shape[0],), capacity, device=real.device)
        n_real = real.sum(1).float()
        return torch.ceil(self.capacity_factor * self.k * n_real / self.num_experts).clamp(max=capacity)

    def _dispatch_compute_combine(self, x: Tensor, row: Tensor, kept: Tensor, gates: Tensor,
                                  capacity: int) -> Tensor:
        """Scatter kept assignments into [e, b*c, d], run the bank once, gather back weighted."""
        b, n, d = x.shape
        token = torch.arange(b * n, device=x.device).reshape(b, n, 1).expand_as(row)[kept]
        rows = row[kept]
        buffer = x.new_zeros(b * self.num_experts * capacity, d)
        buffer = buffer.index_add(0, rows, rearrange(x, "b n d -> (b n) d")[token])
        out = self.experts(rearrange(buffer, "(b e c) d -> e (b c) d", b=b, e=self.num_experts))
        out = rearrange(out, "e (b c) d -> (b e c) d", b=b)
        weighted = out[rows] * gates[kept][:, None]
        y = x.new_zeros(b * n, d).index_add(0, token, weighted)
        return rearrange(y, "(b n) d -> b n d", b=b)

    def _balance_loss(self, probs: Tensor, top1: Tensor, real: Tensor) -> Tensor:
        """Switch Transformer loss e * sum_i f_i P_i over real tokens (1 when balanced)."""
        w = real.float()[..., None]
        count = w.sum().clamp_min(1)
        fraction = (F.one_hot(top1, self.num_experts) * w).sum((0, 1)) / count
        mean_prob = (probs * w).sum((0, 1)) / count
        return self.num_experts * (fraction * mean_prob).sum()

    def flops(self, num_tokens: int) -> dict[str, int]:
        """Multiply-adds per sequence as computed (the capacity buffer is run in full)."""
        per_row = getattr(self.experts, "flops_per_row", lambda: 2 * self.dim * self.hidden_dim)()
        return {"router": num_tokens * self.num_experts * self.dim,
                "experts": self.num_experts * self.capacity(num_tokens) * per_row}

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_experts={self.num_experts}, hidden_dim={self.hidden_dim}, "
                f"k={self.k}, capacity_factor={self.capacity_factor}")

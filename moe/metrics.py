"""Routing metrics returned explicitly by every MoE layer (docs/DESIGN.md section 3).

A layer returns `(y, RoutingMetrics)`. The metrics object holds *detached* routing tensors and
computes its scalars only when asked (`tensors()` / `as_dict()`), so a training step that does
not log pays nothing for them. The only non-detached value is `aux_loss` (top-k baseline's
load-balancing loss), which a trainer may add to its objective; Soft MoE needs none.

Letters: b batch, n tokens, d width, e experts, s slots per expert, m = e*s slots of a layer.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor

MetricFn = Callable[[], dict[str, Tensor]]


class RoutingMetrics:
    """Lazily computed routing statistics of one MoE layer call.

    `tensors()` -> dict of detached tensors: 0-dim scalars plus `expert_load` [e];
    `as_dict()` -> flat `dict[str, float]` for logging (`expert_load/0`, `expert_load/1`, ...).
    An empty object (dense layers) gives `{}`.
    """

    def __init__(self, compute: MetricFn | None = None, aux_loss: Tensor | None = None):
        self._compute = compute
        self._cache: dict[str, Tensor] | None = None
        self.aux_loss = aux_loss

    @classmethod
    def empty(cls) -> "RoutingMetrics":
        return cls()

    def __bool__(self) -> bool:
        return self._compute is not None or self.aux_loss is not None

    def tensors(self) -> dict[str, Tensor]:
        if self._cache is None:
            with torch.no_grad():
                self._cache = dict(self._compute()) if self._compute is not None else {}
                if self.aux_loss is not None:
                    self._cache["aux_loss"] = self.aux_loss.detach().float()
        return self._cache

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors()[name]

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in self.tensors().items():
            if value.ndim == 0:
                out[name] = float(value)
            else:
                out.update({f"{name}/{i}": float(v) for i, v in enumerate(value.flatten())})
        return out

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v:.4g}" for k, v in self.as_dict().items())
        return f"RoutingMetrics({items})"


def _real_mask(mask: Tensor | None, b: int, n: int, device) -> Tensor:
    """[b, n] float, 1 for real tokens (all ones without a mask)."""
    if mask is None:
        return torch.ones(b, n, device=device)
    return mask.float()


def _entropy(p: Tensor, dim: int) -> Tensor:
    """Shannon entropy in nats along `dim`; 0 log 0 = 0."""
    return -(p * torch.log(p.clamp_min(1e-30))).sum(dim)


def soft_moe_metrics(dispatch: Tensor, combine: Tensor, mask: Tensor | None, slots: Tensor,
                     num_experts: int) -> RoutingMetrics:
    """Metrics of one Soft-MoE call.

    dispatch, combine [b, n, m] (softmax over n resp. m), mask bool [b, n] or None,
    slots [b, m, d] (slot inputs). Keys:
    - dispatch_entropy (nats; uniform over n real tokens = log n), dispatch_entropy_norm (0..1),
      dispatch_max (mean over slots of the largest token weight);
    - combine_entropy (nats), combine_max: the same per real token over the m slots;
    - expert_load [e]: share of the combine mass each expert receives (sums to 1);
      expert_load_max / expert_load_min: extremes of it, times e (1 = balanced);
    - slot_similarity: mean cosine similarity between distinct slot inputs of a sample
      (near 1 = slots collapsed onto the same token mix).
    """
    dispatch, combine, slots = dispatch.detach().float(), combine.detach().float(), slots.detach()
    mask = mask.detach() if mask is not None else None

    def compute() -> dict[str, Tensor]:
        b, n, m = dispatch.shape
        real = _real_mask(mask, b, n, dispatch.device)
        n_real = real.sum(1)                                   # [b]
        has_tokens = (n_real > 0).float()                      # fully padded samples excluded
        per_sample = lambda v: (v * has_tokens).sum() / has_tokens.sum().clamp_min(1)  # noqa: E731
        d_ent = reduce(_entropy(dispatch, dim=1), "b m -> b", "mean")
        d_max = reduce(dispatch.amax(dim=1), "b m -> b", "mean")
        token_mean = lambda v: (v * real).sum() / real.sum().clamp_min(1)  # noqa: E731
        load = reduce(combine, "b n (e s) -> b n e", "sum", e=num_experts)
        load = (load * real[..., None]).sum((0, 1)) / real.sum().clamp_min(1)
        return {
            "dispatch_entropy": per_sample(d_ent),
            "dispatch_entropy_norm": per_sample(d_ent / torch.log(n_real.clamp_min(2))),
            "dispatch_max": per_sample(d_max),
            "combine_entropy": token_mean(_entropy(combine, dim=2)),
            "combine_max": token_mean(combine.amax(dim=2)),
            "expert_load": load,
            "expert_load_max": load.max() * num_experts,
            "expert_load_min": load.min() * num_experts,
            "slot_similarity": per_sample(_slot_similarity(slots)),
        }

    return RoutingMetrics(compute)


def _slot_similarity(slots: Tensor) -> Tensor:
    """[b, m, d] -> [b]: mean off-diagonal cosine similarity between slots of each sample."""
    m = slots.shape[1]
    unit = F.normalize(slots.float(), dim=-1)
    gram = torch.einsum("bid,bjd->bij", unit, unit)
    off_diag = gram.sum((1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(1)
    return off_diag / max(m * (m - 1), 1)


def topk_metrics(probs: Tensor, expert_index: Tensor, kept: Tensor, mask: Tensor | None,
                 aux_loss: Tensor) -> RoutingMetrics:
    """Metrics of one top-k token-choice call.

    probs [b, n, e] router softmax; expert_index [b, n, k] chosen experts; kept bool [b, n, k]
    (False = dropped for capacity or padding). Keys: combine_entropy / combine_max of the router
    softmax per real token, expert_load [e] (share of assignments), expert_load_max/min (times e),
    dropped_fraction (real assignments over capacity), aux_loss.
    """
    probs, expert_index, kept = probs.detach().float(), expert_index.detach(), kept.detach()
    mask = mask.detach() if mask is not None else None

    def compute() -> dict[str, Tensor]:
        b, n, e = probs.shape
        real = _real_mask(mask, b, n, probs.device)
        token_mean = lambda v: (v * real).sum() / real.sum().clamp_min(1)  # noqa: E731
        chosen = F.one_hot(expert_index, e).float() * real[..., None, None]   # [b, n, k, e]
        load = chosen.sum((0, 1, 2)) / chosen.sum().clamp_min(1)
        assigned = real.sum() * expert_index.shape[-1]
        dropped = (assigned - (kept.float() * real[..., None]).sum()) / assigned.clamp_min(1)
        return {
            "combine_entropy": token_mean(_entropy(probs, dim=2)),
            "combine_max": token_mean(probs.amax(dim=2)),
            "expert_load": load,
            "expert_load_max": load.max() * e,
            "expert_load_min": load.min() * e,
            "dropped_fraction": dropped,
            "router_entropy_norm": token_mean(_entropy(probs, dim=2)) / math.log(max(e, 2)),
        }

    return RoutingMetrics(compute, aux_loss=aux_loss)

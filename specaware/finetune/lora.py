"""LoRA (Hu et al., 2022, "LoRA: Low-Rank Adaptation of Large Language Models", section 4.1) on
the encoder's attention and MLP / expert projections: W + (alpha / r) A B with W frozen, A
zero-initialised (so training starts from the pretrained function) and B random.

Why our own ~100 lines and not `peft`: peft targets `nn.Linear` (and a few conv/embedding
layers) by module name. A Soft-MoE block keeps its experts as batched weights w1 [e, d, h] and
w2 [e, h, d] applied with one bmm, which peft cannot adapt, and the experts are where most of an
MoE encoder's weights live. One torch parametrization covers both cases: a weight [..., m, n]
(a Linear's [out, in], or an expert bank's [e, d, h]) gets A [..., m, r] and B [..., r, n], one
adapter per expert. It also keeps the model's forward code untouched (model/ and moe/ know
nothing of LoRA) and merges back into plain weights for prediction (`merge`).

Targets (model.lora.targets) in the encoder's transformer blocks: qkv, proj (attention), mlp
(dense MLP layers), experts (Soft-MoE expert banks). Routers, the band conditioning, the
hypernetwork embedding and norms stay frozen.

Letters: e experts, m n weight dims, r rank.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

TARGETS = ("qkv", "proj", "mlp", "experts")


class LoRADelta(nn.Module):
    """Parametrization W [..., m, n] -> W + scale * A [..., m, r] @ B [..., r, n]."""

    def __init__(self, shape: torch.Size, rank: int, alpha: float, dtype=None, device=None):
        super().__init__()
        *lead, m, n = shape
        self.rank, self.scale = rank, alpha / rank
        self.A = nn.Parameter(torch.zeros(*lead, m, rank, dtype=dtype, device=device))
        self.B = nn.Parameter(torch.empty(*lead, rank, n, dtype=dtype, device=device))
        nn.init.normal_(self.B, std=1.0 / math.sqrt(n))    # unit-variance x B for unit x

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * torch.matmul(self.A, self.B).to(weight.dtype)


def _targets(encoder: nn.Module, wanted: set[str]) -> list[tuple[str, nn.Module, str]]:
    """(module name, module, parameter name) of every weight LoRA adapts."""
    from moe import DenseMLP, MLPExperts, SwiGLUExperts
    from specaware.model.block import Attention
    found = []
    # the transformer stack; the band-conditioning network (a block over band tokens) and the
    # hypernetwork embedding stay as pretrained: they encode sensor physics, not the task
    stack = getattr(encoder, "blocks", None)
    root, prefix = (stack, "blocks.") if isinstance(stack, nn.Module) else (encoder, "")
    for name, module in root.named_modules(prefix=prefix.rstrip(".")):
        if isinstance(module, Attention):
            found += [(f"{name}.{part}", getattr(module, part), "weight")
                      for part in ("qkv", "proj") if part in wanted]
        elif isinstance(module, DenseMLP) and "mlp" in wanted:
            found += [(f"{name}.{n}", m, "weight") for n, m in module.named_children()
                      if isinstance(m, nn.Linear)]
        elif isinstance(module, (MLPExperts, SwiGLUExperts)) and "experts" in wanted:
            found += [(name, module, p) for p, w in module.named_parameters(recurse=False)
                      if w.dim() == 3]
    return found


def apply_lora(encoder: nn.Module, rank: int = 8, alpha: float = 16.0,
               targets=TARGETS) -> int:
    """Freeze `encoder` and add trainable adapters to its target weights, in place.

    Returns the number of adapted weights; raises when none matches (the targets name no
    layer this encoder has)."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or rank < 1:
        raise ValueError(f"model.lora: targets {unknown} not among {list(TARGETS)}"
                         if unknown else f"model.lora.rank={rank} must be >= 1")
    encoder.requires_grad_(False)
    found = _targets(encoder, set(targets))
    if not found:
        raise ValueError(f"model.lora.targets={list(targets)} matches no layer of this encoder "
                         f"({type(encoder).__name__}); use some of {list(TARGETS)}")
    for _, module, param in found:
        w = getattr(module, param)
        parametrize.register_parametrization(
            module, param, LoRADelta(w.shape, rank, alpha, w.dtype, w.device))
    return len(found)


def merge(module: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W + scale A B) and drop the parametrization: plain
    weights, the original state-dict keys, no extra matmul at prediction time."""
    for m in list(module.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """What an adapter checkpoint holds: every trainable parameter (the adapters, and the head)
    plus every tensor outside the encoder (head buffers); the frozen base encoder is left out."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()
            if k in trainable or not k.startswith("encoder.")}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"trainable", "total"} parameter counts (adapters counted once, base weights once)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}

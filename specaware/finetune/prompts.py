"""Learnable prompt tokens in a frozen encoder's token sequence (visual prompt tuning).

VPT (Jia et al., "Visual Prompt Tuning", ECCV 2022, sec. 3.2): a few learnable d-wide tokens are
put into the sequence of a frozen transformer; only they (and a head) train. VPT-Shallow enters
them once, before the first block; VPT-Deep gives every block its own set, replacing the previous
block's prompt outputs. The encoder's hook is `SpecAwareEncoder.forward(..., prompts=)`; this
module owns the parameters and how several named groups (e.g. FedRSCLIP's shared and private
prompts) are joined into one sequence.

    prompts = PromptTokens(encoder, {"shared": 4, "private": 4}, deep=False)
    encoder.requires_grad_(False)
    tokens = prompts.features(encoder, batch, groups=["shared", "private"])  # [b, n, d]
    pooled = prompts.pooled(encoder, batch, groups=["shared"])               # [b, d]

Letters: b batch, n patches, m prompt tokens, d width, l blocks.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from einops import reduce, repeat
from torch import Tensor, nn


class PromptTokens(nn.Module):
    """Named groups of learnable prompt tokens for one encoder.

    Args:
        encoder: the encoder the prompts are for (reads `embed_dim` and `depth`).
        groups: group name -> number of tokens m_g (an int makes one group "prompt").
        deep: one set per block ([l, m_g, d] per group) instead of one set before block 0.
        init_std: the tokens start as N(0, init_std^2), the scale of a ViT's cls token.
    Parameters are `groups.<name>` of shape [m_g, d] (shallow) or [l, m_g, d] (deep), so a group
    can be sent, averaged or kept private by name (`group_state` / `load_group_state`).
    """

    def __init__(self, encoder: nn.Module, groups: dict[str, int] | int, deep: bool = False,
                 init_std: float = 0.02):
        super().__init__()
        groups = {"prompt": groups} if isinstance(groups, int) else dict(groups)
        bad = {k: v for k, v in groups.items() if int(v) < 1}
        if not groups or bad:
            raise ValueError(f"prompt groups {groups}: each group needs >= 1 token")
        self.dim, self.depth, self.deep = encoder.embed_dim, encoder.depth, deep
        lead = (self.depth,) if deep else ()
        self.groups = nn.ParameterDict({
            name: nn.Parameter(torch.randn(*lead, int(m), self.dim) * init_std)
            for name, m in groups.items()})

    @property
    def names(self) -> list[str]:
        return list(self.groups.keys())

    def num_tokens(self, groups: Iterable[str] | None = None) -> int:
        return sum(self.groups[g].shape[-2] for g in self._select(groups))

    def sequence(self, batch_size: int, groups: Iterable[str] | None = None) -> Tensor:
        """Prompts of `groups` (in that order; None = all) for the encoder's `prompts=` argument:
        [b, m, d] shallow, [l, b, m, d] deep, m the sum of the groups' tokens."""
        tokens = torch.cat([self.groups[g] for g in self._select(groups)], dim=-2)
        if self.deep:
            return repeat(tokens, "l m d -> l b m d", b=batch_size)
        return repeat(tokens, "m d -> b m d", b=batch_size)

    def features(self, encoder: nn.Module, batch: dict,
                 groups: Iterable[str] | None = None) -> Tensor:
        """Patch tokens [b, n, d] of `encoder` run with the prompts of `groups`."""
        b = batch["image"].shape[0]
        return encoder.forward_features(batch, prompts=self.sequence(b, groups))

    def pooled(self, encoder: nn.Module, batch: dict,
               groups: Iterable[str] | None = None) -> Tensor:
        """[b, d]: mean over the prompt outputs and patch tokens after the final norm."""
        b = batch["image"].shape[0]
        out = encoder(batch, prompts=self.sequence(b, groups))
        tokens = out.tokens[:, getattr(encoder, "num_prefix_tokens", 0):]
        return reduce(tokens, "b n d -> b d", "mean")

    def group_state(self, groups: Sequence[str]) -> dict[str, Tensor]:
        """Detached copies of the named groups' tokens (what a client would send)."""
        return {g: self.groups[g].detach().clone() for g in self._select(groups)}

    def load_group_state(self, state: dict[str, Tensor]) -> None:
        """Overwrite the named groups in place; shapes must match."""
        for name, value in state.items():
            if name not in self.groups:
                raise KeyError(f"prompt group {name!r} is not one of {self.names}")
            mine = self.groups[name]
            if tuple(value.shape) != tuple(mine.shape):
                raise ValueError(f"prompt group {name!r}: got shape {tuple(value.shape)}, the "
                                 f"model has {tuple(mine.shape)} (same tokens, deep and width?)")
            with torch.no_grad():
                mine.copy_(value)

    def _select(self, groups: Iterable[str] | None) -> list[str]:
        chosen = self.names if groups is None else list(groups)
        unknown = [g for g in chosen if g not in self.groups]
        if unknown or not chosen:
            raise KeyError(f"prompt groups {unknown or chosen} not among {self.names}")
        return chosen

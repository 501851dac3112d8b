"""A tiny stand-in with the encoder surface of INTERFACES.md (forward_features,
forward_intermediates, embed_dim, patch_size, depth, blocks, norm), used only until the real
`specaware_debug` lands. Tokens depend on wavelengths, so any band set works.

Letters: b batch, c bands, n tokens, p patch pixels, d width, h w grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn


@dataclass
class StandInConfig:
    embed_dim: int = 32
    depth: int = 2
    patch_size: int = 4
    heads: int = 2


class StandInEncoder(nn.Module):
    def __init__(self, cfg: StandInConfig):
        super().__init__()
        d, k = cfg.embed_dim, cfg.patch_size
        self.embed_dim, self.patch_size, self.depth = d, k, cfg.depth
        self.band_weights = nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Linear(64, k * k * d))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, dropout=0.0, batch_first=True,
                                       norm_first=True) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)

    def _features(self, wl: torch.Tensor) -> torch.Tensor:
        x = wl[..., None] / 1000.0
        freqs = torch.arange(1, 5, device=wl.device, dtype=wl.dtype)
        return torch.cat([torch.sin(x * freqs * 3), torch.cos(x * freqs * 3)], -1)

    def embed(self, batch: dict) -> tuple[torch.Tensor, int, int]:
        k = self.patch_size
        img = batch["image"] * batch["band_mask"][:, :, None, None]
        h, w = img.shape[-2] // k, img.shape[-1] // k
        x = rearrange(img, "b c (h p1) (w p2) -> b c (h w) (p1 p2)", p1=k, p2=k)
        weights = rearrange(self.band_weights(self._features(batch["wavelength"])),
                            "b c (p d) -> b c p d", p=k * k)
        count = batch["band_mask"].sum(1).clamp(min=1)[:, None, None]
        return torch.einsum("bcnp,bcpd->bnd", x, weights) / count, h, w

    def forward_features(self, batch: dict) -> torch.Tensor:
        x, _, _ = self.embed(batch)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_intermediates(self, batch: dict, indices=None) -> list[torch.Tensor]:
        indices = list(range(self.depth)) if indices is None else list(indices)
        x, h, w = self.embed(batch)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in indices:
                outs.append(rearrange(x, "b (h w) d -> b d h w", h=h, w=w))
        return outs


class StandInMAE(nn.Module):
    def __init__(self, cfg: StandInConfig | None = None):
        super().__init__()
        self.config = cfg or StandInConfig()
        self.encoder = StandInEncoder(self.config)
        self.decoder = nn.Linear(self.config.embed_dim, 4)


def build_standin(model_config=None, variant=None) -> StandInMAE:
    from specaware.config import from_dict
    cfg = from_dict(StandInConfig, model_config) if model_config else StandInConfig()
    return StandInMAE(cfg)

"""GSD-scaled 2D sin-cos position embeddings (DESIGN.md section 2, Encoder).

Positions are the patch centres in metres from the tile's top-left corner, so the same ground
distance gets the same code at any resolution: a 30 m Landsat tile and a 5 m AVIRIS-NG tile line
up where they overlap in metres, not in pixels. Periods are log-spaced from `min_period_m`
(a few metres, finer than one patch at the finest GSD) to `max_period_m` (beyond a tile).

Letters: b batch, n patches (row-major over an h x w grid), d width, f frequencies per axis.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


def patch_centres(grid_h: int, grid_w: int, patch_size: int, gsd: Tensor) -> Tensor:
    """Patch centres [b, n, 2] (row, column) in metres; gsd [b] in metres per pixel."""
    rows = (torch.arange(grid_h, device=gsd.device, dtype=gsd.dtype) + 0.5) * patch_size
    cols = (torch.arange(grid_w, device=gsd.device, dtype=gsd.dtype) + 0.5) * patch_size
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
    return rearrange(grid, "h w two -> 1 (h w) two") * rearrange(gsd, "b -> b 1 1")


class MetricPositionEmbedding(nn.Module):
    """Fixed (not learned) sin-cos code of patch positions in metres -> [b, n, d]."""

    def __init__(self, dim: int, min_period_m: float = 4.0, max_period_m: float = 1e5):
        super().__init__()
        if dim % 4:
            raise ValueError(f"position embedding width {dim} must be divisible by 4")
        periods = torch.logspace(math.log10(min_period_m), math.log10(max_period_m), dim // 4)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)

    def forward(self, grid_h: int, grid_w: int, patch_size: int, gsd: Tensor) -> Tensor:
        """gsd [b] metres -> [b, grid_h * grid_w, d]."""
        pos = patch_centres(grid_h, grid_w, patch_size, gsd.float())
        phase = rearrange(pos, "b n two -> b n two 1") * self.omega
        code = torch.cat([phase.sin(), phase.cos()], dim=-1)
        return rearrange(code, "b n two f -> b n (two f)")

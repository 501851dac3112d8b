"""2D sin-cos position embeddings with per-sample periods (docs/DESIGN.md section 2, Encoder).

Positions are the patch centres in metres from the tile's top-left corner. The periods of the
f frequencies per axis are log-spaced PER SAMPLE from `min_spacings` patch spacings (2: the
Nyquist limit of a grid sampled once per patch) to `max_extents` tile extents (4: a quarter of
a period over the whole tile, so the slowest pair still orders every patch uniquely), each
clipped to [min_period_m, max_period_m].

Why per sample: one fixed range in metres has to cover the finest and the coarsest GSD. The
old 4 m to 100 km range at 5-60 m GSD (patch 8, 128 px tiles) put 30-54 % of the frequencies
above the Nyquist limit of the patch grid (aliased: neighbouring patches get unrelated codes)
and 5-29 % beyond 8 tile extents (constant over the tile), so a third to two thirds of the
width carried nothing. Now every frequency distinguishes patches of the tile it is used on.
The price: with spacing and extent both proportional to the GSD, the code of a patch depends
on its grid position and the tile's size in patches, not on metres; the ground sampling
distance no longer reaches the model through the positions. The clipping bounds
(`pos_min_period_m`, `pos_max_period_m` in the model config) only bite at extreme scales.

Letters: b batch, n patches (row-major over an h x w grid), d width, f frequencies per axis.
"""
from __future__ import annotations

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
    """Fixed (not learned) sin-cos code of patch positions -> [b, n, d] (see the module doc)."""

    def __init__(self, dim: int, min_period_m: float = 1.0, max_period_m: float = 1e7,
                 min_spacings: float = 2.0, max_extents: float = 4.0):
        super().__init__()
        if dim % 4:
            raise ValueError(f"position embedding width {dim} must be divisible by 4")
        if min_spacings <= 0 or max_extents <= 0 or min_period_m <= 0:
            raise ValueError(f"position periods must be positive: min_spacings {min_spacings}, "
                             f"max_extents {max_extents}, min_period_m {min_period_m}")
        self.min_period_m, self.max_period_m = min_period_m, max_period_m
        self.min_spacings, self.max_extents = min_spacings, max_extents
        self.register_buffer("fraction", torch.linspace(0.0, 1.0, dim // 4), persistent=False)

    def periods(self, grid_h: int, grid_w: int, patch_size: int, gsd: Tensor) -> Tensor:
        """Periods [b, f] in metres: log-spaced from min_spacings x patch spacing to
        max_extents x tile extent (longer side), clipped to [min_period_m, max_period_m]."""
        spacing = patch_size * gsd.float()                                     # [b] metres
        low = (self.min_spacings * spacing).clamp(self.min_period_m, self.max_period_m)
        high = (self.max_extents * max(grid_h, grid_w) * spacing).clamp(
            self.min_period_m, self.max_period_m)
        high = torch.maximum(high, low)
        ratio = rearrange(high / low, "b -> b 1")
        return rearrange(low, "b -> b 1") * ratio ** self.fraction

    def forward(self, grid_h: int, grid_w: int, patch_size: int, gsd: Tensor) -> Tensor:
        """gsd [b] metres -> [b, grid_h * grid_w, d]."""
        pos = patch_centres(grid_h, grid_w, patch_size, gsd.float())
        omega = 2 * torch.pi / self.periods(grid_h, grid_w, patch_size, gsd)   # [b, f]
        phase = rearrange(pos, "b n two -> b n two 1") * rearrange(omega, "b f -> b 1 1 f")
        code = torch.cat([phase.sin(), phase.cos()], dim=-1)
        return rearrange(code, "b n two f -> b n (two f)")

"""Hyper output head: decoder tokens -> pixels of ANY target band set (docs/DESIGN.md section 2).

The same kind of hypernetwork as the HyperEmbedding, run in reverse. For every band c of the
TARGET view (which may be another sensor's: encode view A, reconstruct view B) it generates the
projection from decoder width to the k*k pixels of a patch, as a rank-r product
    P_c = A_c B_c,   A_c [p, r],   B_c = sum_j h_cj G_j [r, dd]   (h_c0 = 1 constant feature)
plus a per-band pixel bias, all from a condition of the target bands built from their metadata
only (wavelength, FWHM, sensor, level): the target's pixels are what is being predicted, so they
must not enter the condition. Output is in the target's standardised units (see loss.py).

As in the embedding, B_c is never materialised: tokens are projected on the shared basis G
once, then mixed per band:
    S = t G          [b, n, j*r]   n*dd*j*r
    u = h^T S        [b, c, n, r]  c*j*n*r
    y = u A^T + bias [b, c, n, p]  c*n*r*p

Letters: b batch, c target bands, n patches, p patch pixels (k*k), r rank, j hypernetwork
features (+1 constant), dd decoder width, dz condition width.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from specaware.model.conditioning import BandConditioning
from specaware.model.config import ConditioningConfig
from specaware.model.masking import gather_tokens


class HeadFactors(NamedTuple):
    """What the hypernetwork generates for the target bands (letters as in the module doc)."""
    h: Tensor       # [b, c, j] basis mixing features, constant 1 last
    a: Tensor       # [b, c, r, p] spatial factors A_c (transposed)
    bias: Tensor    # [b, c, p] per-band pixel bias

    def detach(self) -> "HeadFactors":
        return HeadFactors(*(t.detach() for t in self))


class HyperOutputHead(nn.Module):
    """tokens [b, n, dd] + target band metadata -> standardised pixels [b, c, n, p]."""

    def __init__(self, cond: ConditioningConfig, num_sensors: int, num_levels: int,
                 decoder_dim: int, patch_size: int, rank: int = 16, hidden: int = 128):
        super().__init__()
        self.rank, self.patch_pixels = rank, patch_size ** 2
        self.conditioning = BandConditioning(cond, num_sensors, num_levels, use_content=False)
        dz = cond.cond_dim
        self.a_gen = nn.Linear(dz, self.patch_pixels * rank)
        self.pixel_bias = nn.Linear(dz, self.patch_pixels)
        self.b_features = nn.Sequential(nn.Linear(dz, hidden), nn.GELU())
        self.b_basis = nn.Parameter(torch.empty(decoder_dim, (hidden + 1) * rank))
        nn.init.normal_(self.b_basis, std=1.0 / math.sqrt(decoder_dim * (hidden + 1)))
        nn.init.normal_(self.a_gen.weight, std=1.0 / math.sqrt(dz * rank))
        nn.init.zeros_(self.a_gen.bias)
        nn.init.zeros_(self.pixel_bias.weight)
        nn.init.zeros_(self.pixel_bias.bias)

    def forward(self, tokens: Tensor, target, hidden: Tensor | None = None):
        """tokens [b, n, dd] (no cls), target: BandInputs of the target view -> [b, c, n, p].

        With `hidden` [b, n_h] patch indices: (pixels of those patches [b, c, n_h, p], the
        projection of every patch [b, n, j*r], the factors), so the training loss runs the
        head on the hidden patches only and a reconstruction of all of them can be rebuilt
        later from detached values with `pixels`. Callers go through here rather than
        `project`/`factors`: ZeRO-3 gathers partitioned parameters such as `b_basis` only
        in a module's forward."""
        projected, factors = self.project(tokens), self.factors(target)
        if hidden is None:
            return self.pixels(projected, factors)
        return self.pixels(gather_tokens(projected, hidden), factors), projected, factors

    def factors(self, target) -> HeadFactors:
        """Per-band factors of the target view (BandInputs), from its metadata only."""
        # bands without any valid target pixel (absorption bands) weigh like padding: they
        # take no part in the attention across bands, and the loss never reads them
        z = self.conditioning(target.wavelength, target.fwhm, target.sensor, target.level,
                              target.present)
        h = self.b_features(z)
        h = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)
        a = rearrange(self.a_gen(z), "b c (p r) -> b c r p", r=self.rank)
        return HeadFactors(h, a, self.pixel_bias(z))

    def project(self, tokens: Tensor) -> Tensor:
        """Tokens on the shared basis G: [b, n, dd] -> S [b, n, j*r]. Per patch, so a caller
        may keep the rows of some patches only (the masked ones, for the loss)."""
        return tokens @ self.b_basis.to(tokens.dtype)

    def pixels(self, projected: Tensor, f: HeadFactors) -> Tensor:
        """S [b, n, j*r] + factors -> standardised pixels [b, c, n, p]."""
        dtype = projected.dtype
        projected = rearrange(projected, "b n (j r) -> b j (n r)", r=self.rank)
        mixed = rearrange(torch.bmm(f.h.to(dtype), projected), "b c (n r) -> b c n r",
                          r=self.rank)
        b, c = mixed.shape[:2]
        out = torch.baddbmm(rearrange(f.bias.to(dtype), "b c p -> (b c) 1 p"),
                            rearrange(mixed, "b c n r -> (b c) n r"),
                            rearrange(f.a.to(dtype), "b c r p -> (b c) r p"))   # bias fused in
        return rearrange(out, "(b c) n p -> b c n p", b=b, c=c)

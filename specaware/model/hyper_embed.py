"""HyperEmbedding: patch tokens from any number of bands (SpecAware; docs/DESIGN.md section 2).

A hypernetwork turns each band's condition z_c into two factors
    V_c [r, p]  spatial pattern extraction (p = k*k pixels of a patch),
    U_c [d, r]  re-projection to the latent width,
and a bias from the mean condition over the bands present. For patch n:
    token_n = sum_c w_nc U_c V_c x[n, c]  +  bias,   w_nc = 1 / C_n for the C_n bands with a
valid pixel in patch n, 0 for the others (padded bands, and real bands whose pixels are all
invalid there, such as water-vapour absorption bands). A token is a band average, so its
magnitude depends neither on how many bands the sensor has nor on how many it loses to
absorption or nodata: an all-invalid band weighs exactly like padding.

Cost. U_c is generated linearly from hypernetwork features h_c [j] (with a constant feature
h_c0 = 1): U_c = sum_j h_cj G_j, G [j, r, d] learned. Substituting,
    token_n = sum_{j, r} (sum_c h_cj V_c x[n, c])_r  G_{j r :}
so the model contracts the bands away first (a [b, j, n, r] tensor) and never builds U_c for
every band, let alone the [b, n, c, d] tensor of the direct formula (hundreds of MB per tile at
224 bands). Steps and their multiply-adds per sample:
    V x      [b, c, n, r]   c*n*p*r
    h^T (Vx) [b, j, n*r]    j*c*n*r
    (.) G    [b, n, d]      n*j*r*d
The encoder gathers the visible patches before calling this, so in pretraining n is ~25% of the
tile.

Letters: b batch, c bands, n patches, p patch pixels (k*k), r rank, j hypernetwork features
(+1 constant), d width, dz condition width.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


def band_weights(band_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[b, c] weights: 1 / (number of real bands) at real bands, 0 at padding."""
    real = band_mask.to(dtype)
    return real / real.sum(dim=1, keepdim=True).clamp_min(1.0)


def patch_band_weights(valid: Tensor, band_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[b, c, n] weights w_nc: 1 / C_n at the bands with a valid pixel in patch n, else 0.

    valid bool [b, c, n, p]; band_mask bool [b, c]."""
    present = valid.any(dim=-1) & rearrange(band_mask, "b c -> b c 1")
    present = present.to(dtype)
    return present / present.sum(dim=1, keepdim=True).clamp_min(1.0)


class HyperEmbedding(nn.Module):
    """x [b, c, n, p] pixels + z [b, c, dz] band conditions -> tokens [b, n, d]."""

    def __init__(self, cond_dim: int, embed_dim: int, patch_size: int, rank: int = 16,
                 hidden: int = 128):
        super().__init__()
        self.patch_pixels, self.rank, self.embed_dim = patch_size ** 2, rank, embed_dim
        self.v_gen = nn.Linear(cond_dim, rank * self.patch_pixels)
        self.u_features = nn.Sequential(nn.Linear(cond_dim, hidden), nn.GELU())
        self.u_basis = nn.Parameter(torch.empty(hidden + 1, rank, embed_dim))
        self.bias_gen = nn.Sequential(nn.Linear(cond_dim, cond_dim), nn.GELU(),
                                      nn.Linear(cond_dim, embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # V_c x ~ unit scale for unit-variance pixels; G spreads j*r features onto d outputs.
        nn.init.normal_(self.v_gen.weight, std=1.0 / math.sqrt(self.v_gen.in_features))
        nn.init.normal_(self.v_gen.bias, std=1.0 / math.sqrt(self.patch_pixels))
        fan_in = self.u_basis.shape[0] * self.u_basis.shape[1]
        nn.init.normal_(self.u_basis, std=math.sqrt(2.0 / (fan_in + self.embed_dim)))

    def factors(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """V [b, c, p, r] and the U features h [b, c, j] (j = hidden + 1, constant 1 last)."""
        v = rearrange(self.v_gen(z), "b c (r p) -> b c p r", r=self.rank)
        h = self.u_features(z)
        return v, torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)

    def basis_matrices(self, z: Tensor, band_mask: Tensor) -> Tensor:
        """U_c [b, c, d, r] made explicit (for tests and inspection; forward never builds it)."""
        h = self.u_features(z)
        h = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)
        return torch.einsum("bcj,jrd->bcdr", h, self.u_basis)

    def bias(self, z: Tensor, band_mask: Tensor) -> Tensor:
        """Bias [b, d] from the mean condition over the bands of `band_mask`."""
        mean_z = torch.einsum("bcz,bc->bz", z, band_weights(band_mask, z.dtype))
        return self.bias_gen(mean_z)

    def forward(self, x: Tensor, z: Tensor, band_mask: Tensor,
                valid: Tensor | None = None) -> Tensor:
        """x [b, c, n, p] (already normalised, 0 at invalid pixels), z [b, c, dz],
        band_mask bool [b, c], valid bool [b, c, n, p] (None: every pixel of a real band)
        -> tokens [b, n, d]."""
        v, h = self.factors(z)
        weights = (rearrange(band_weights(band_mask, v.dtype), "b c -> b c 1") if valid is None
                   else patch_band_weights(valid, band_mask, v.dtype))        # [b, c, n]
        projected = torch.matmul(x.to(v.dtype), v)                      # [b, c, n, r]
        projected = projected * rearrange(weights, "b c n -> b c n 1")
        n = projected.shape[2]
        mixed = torch.bmm(rearrange(h, "b c j -> b j c"),
                          rearrange(projected, "b c n r -> b c (n r)"))  # [b, j, n*r]
        mixed = rearrange(mixed, "b j (n r) -> b n (j r)", n=n)
        tokens = mixed @ rearrange(self.u_basis, "j r d -> (j r) d")  # [b, n, d]
        return tokens + rearrange(self.bias(z, band_mask), "b d -> b 1 d")

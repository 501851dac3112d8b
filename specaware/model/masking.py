"""Patches and random masking for the masked autoencoder (MAE, He et al. 2022; docs/DESIGN.md section 2).

Patches are kept band-major, [b, c, n, p], because every per-band operation (statistics,
HyperEmbedding's V_c projection, the output head) is then a batched matmul over (b, c) with no
transpose of the pixel tensor.

Letters: b batch, c bands, n patches (row-major over an h x w grid), p patch pixels (k*k),
k patch side.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """[b, c, H, W] -> [b, c, n, p] with n = (H/k)(W/k), p = k*k."""
    return rearrange(x, "b c (h k1) (w k2) -> b c (h w) (k1 k2)", k1=patch_size, k2=patch_size)


def unpatchify(x: Tensor, patch_size: int, grid_w: int) -> Tensor:
    """[b, c, n, p] -> [b, c, H, W]; grid_w = W / k."""
    return rearrange(x, "b c (h w) (k1 k2) -> b c (h k1) (w k2)", w=grid_w, k1=patch_size)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches the encoder sees: round(n * (1 - ratio)), at least one."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, int(round(num_patches * (1.0 - mask_ratio))))


def random_masking(batch_size: int, num_patches: int, mask_ratio: float, device,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Independent random subset per sample.

    Returns keep [b, n_keep] (visible patch indices, ascending) and mask bool [b, n]
    (True = hidden from the encoder). Reproducible under `torch.manual_seed` or a `generator`
    (which must live on `device`).
    """
    n_keep = num_visible(num_patches, mask_ratio)
    noise = torch.rand(batch_size, num_patches, device=device, generator=generator)
    keep = torch.argsort(noise, dim=1)[:, :n_keep].sort(dim=1).values
    mask = torch.ones(batch_size, num_patches, dtype=torch.bool, device=device)
    mask.scatter_(1, keep, False)
    return keep, mask


def hidden_indices(mask: Tensor, num_hidden: int) -> Tensor:
    """bool mask [b, n] with `num_hidden` True (hidden) per sample, as `random_masking` makes
    -> hidden patch indices [b, num_hidden], ascending. (A stable sort rather than `nonzero`,
    so it also runs on the meta device.)"""
    order = torch.argsort(mask.to(torch.uint8), dim=1, descending=True, stable=True)
    return order[:, :num_hidden]


def gather_patches(x: Tensor, keep: Tensor) -> Tensor:
    """x [b, c, n, p], keep [b, n_keep] -> [b, c, n_keep, p] (only those patches are copied).

    One `index_select` of whole patch rows of x seen as [b*c*n, p], with an index of b*c*n_keep
    row numbers: ~6x faster on the CPU than `gather`, which reads an index per pixel."""
    b, c, n, p = x.shape
    bands = torch.arange(c, device=keep.device)
    samples = torch.arange(b, device=keep.device)
    rows = (rearrange(samples, "b -> b 1 1") * c + rearrange(bands, "c -> 1 c 1")) * n
    rows = rearrange(rows + rearrange(keep, "b m -> b 1 m"), "b c m -> (b c m)")
    out = rearrange(x, "b c n p -> (b c n) p").index_select(0, rows)
    return rearrange(out, "(b c m) p -> b c m p", b=b, c=c)


def gather_tokens(x: Tensor, keep: Tensor) -> Tensor:
    """x [b, n, d], keep [b, n_keep] -> [b, n_keep, d]."""
    index = rearrange(keep, "b n -> b n 1").expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, index)


def scatter_tokens(visible: Tensor, keep: Tensor, fill: Tensor, num_patches: int) -> Tensor:
    """Put visible tokens [b, n_keep, d] back on the full grid [b, n, d]; `fill` [d] elsewhere."""
    b, _, d = visible.shape
    full = fill.to(visible.dtype).expand(b, num_patches, d).clone()
    index = rearrange(keep, "b n -> b n 1").expand(-1, -1, d)
    return full.scatter(1, index, visible)

"""Pre-norm transformer block whose MLP is a dense MLP or a Soft-MoE layer (docs/DESIGN.md sections 2, 3).

The MLP slot takes any module with the `moe` call signature `y, metrics = mlp(x, mask=None)`,
so dense and Soft-MoE blocks are the same class and routing metrics come back explicitly.

Letters: b batch, n tokens, d width, h heads, hd head width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def make_mlp(dim: int, hidden_dim: int, *, moe: bool = False, num_experts: int = 8,
             slots_per_expert: int = 8, expert: str = "mlp") -> nn.Module:
    """Dense MLP or Soft-MoE layer from package `moe`; both return (y, RoutingMetrics)."""
    from moe import DenseMLP, SoftMoE
    if moe:
        return SoftMoE(dim, num_experts, slots_per_expert, hidden_dim, expert=expert)
    return DenseMLP(dim, hidden_dim)


class Attention(nn.Module):
    """Multi-head self-attention; `mask` [b, n] True = real token (padding is never attended)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases, as the MLPs and experts (moe/dense.py) and
        MAE's ViT. PyTorch's default (Kaiming-uniform with a=sqrt(5), std 1/sqrt(3 fan_in), and
        random biases) starts qkv 1.2x and proj 1.7x narrower than the blocks' MLPs."""
        for layer in (self.qkv, self.proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [b, n, d] -> [b, n, d]."""
        q, k, v = rearrange(self.qkv(x), "b n (three h hd) -> three b h n hd",
                            three=3, h=self.num_heads)
        attn_mask = None if mask is None else rearrange(mask, "b n -> b 1 1 n")
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(rearrange(y, "b h n hd -> b n (h hd)"))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability `p`."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)); returns (x, routing metrics of the MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 mlp: nn.Module | None = None, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp if mlp is not None else make_mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor | None = None):
        """x [b, n, d], mask [b, n] or None -> (x [b, n, d], RoutingMetrics)."""
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        y, metrics = self.mlp(self.norm2(x), mask=mask)
        return x + self.drop_path(y), metrics

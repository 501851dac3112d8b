"""Dense MLP reference with the MoE layers' call signature: `y, metrics = mlp(x, mask)`.

The baseline Soft MoE and top-k are compared against (same init as one expert, see experts.py),
and the drop-in a transformer block uses where it has no MoE. Metrics are empty.

Letters: b batch, n tokens, d width, h hidden width.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import RoutingMetrics


class DenseMLP(nn.Module):
    """d -> h -> d MLP; expert="mlp" (GELU, fc1/fc2) or "swiglu" (fc_in gives gate and up, fc_out)."""

    def __init__(self, dim: int, hidden_dim: int, expert: str = "mlp"):
        super().__init__()
        if expert not in ("mlp", "swiglu"):
            raise ValueError(f"unknown expert type {expert!r} for DenseMLP; choose 'mlp' or 'swiglu'")
        self.dim, self.hidden_dim, self.expert = dim, hidden_dim, expert
        if expert == "mlp":
            self.fc1, self.fc2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)
        else:
            self.fc_in = nn.Linear(dim, 2 * hidden_dim, bias=False)
            self.fc_out = nn.Linear(hidden_dim, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, RoutingMetrics]:
        """x [b, n, d]; mask bool [b, n] (True = real) -> (y [b, n, d], empty metrics).

        Padded tokens' outputs are zeroed, as in the MoE layers.
        """
        if self.expert == "mlp":
            y = self.fc2(F.gelu(self.fc1(x)))
        else:
            gate, up = self.fc_in(x).chunk(2, dim=-1)
            y = self.fc_out(F.silu(gate) * up)
        if mask is not None:
            y = y * mask[..., None].to(y.dtype)
        return y, RoutingMetrics.empty()

    def flops(self, num_tokens: int) -> dict[str, int]:
        """Multiply-adds per sequence of n tokens."""
        per_token = (3 if self.expert == "swiglu" else 2) * self.dim * self.hidden_dim
        return {"router": 0, "experts": num_tokens * per_token}

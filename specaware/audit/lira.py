"""LiRA, the likelihood-ratio membership attack with shadow models (Carlini et al., "Membership
Inference Attacks From First Principles", IEEE S&P 2022), online variant with fixed variance.

The attacker trains `shadows` models, each on a random half of the candidate samples, so every
candidate is IN for about half of them and OUT for the rest (sec. IV-B). For each candidate it
fits a Gaussian to the shadows' logit-scaled confidence phi = log(p_y / (1 - p_y)) when IN and
when OUT, and scores the target's phi by the log-likelihood ratio. With few shadows one variance
per side pooled over all candidates is more stable than per-candidate variances (sec. VI-A,
"fixed variance"); that is what is used here.

Shadows are linear heads on the attacker's frozen features of the candidates (the public
pretrained encoder's pooled tokens), trained full-batch with Adam; the audited model itself has
prompts and a head on the same encoder. They are cheap: 16 shadows on 200 candidates take
seconds on one core.

Letters: N candidates, d feature width, K classes, S shadows.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def logit_confidence(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """phi [N] = log p_y - log(1 - p_y) from probabilities [N, K] (clipped for stability)."""
    py = np.clip(prob[np.arange(len(label)), label], EPS, 1 - EPS)
    return np.log(py) - np.log1p(-py)


def _logit_confidence_from_logits(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Stable phi from logits: z_y - logsumexp_{k != y} z_k."""
    z_y = logits.gather(1, label[:, None])[:, 0]
    others = logits.scatter(1, label[:, None], float("-inf"))
    return z_y - torch.logsumexp(others, dim=1)


def train_head(features: torch.Tensor, label: torch.Tensor, num_classes: int, steps: int,
               seed: int, lr: float = 0.05, weight_decay: float = 1e-4) -> nn.Module:
    """A LayerNorm + linear head [d -> K] fitted full-batch on (features [n, d], label [n])."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.LayerNorm(features.shape[1]), nn.Linear(features.shape[1],
                                                                     num_classes))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(features), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def shadow_confidences(features: np.ndarray, label: np.ndarray, num_classes: int, shadows: int,
                       steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(phi [S, N], in_mask bool [S, N]): every candidate is IN for half of the shadows."""
    rng = np.random.default_rng(seed)
    n = len(label)
    # balanced design: per candidate, a random half of the shadows hold it
    order = np.argsort(rng.random((shadows, n)), axis=0)
    in_mask = order < shadows // 2 if shadows > 1 else rng.random((1, n)) < 0.5
    x, y = torch.from_numpy(features).float(), torch.from_numpy(label).long()
    phi = np.empty((shadows, n), np.float64)
    for s in range(shadows):
        idx = torch.from_numpy(np.flatnonzero(in_mask[s]))
        with torch.enable_grad():
            head = train_head(x[idx], y[idx], num_classes, steps, seed * 1000 + s)
        phi[s] = _logit_confidence_from_logits(head(x), y).double().numpy()
    return phi, in_mask


def lira_score(target_phi: np.ndarray, shadow_phi: np.ndarray, in_mask: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio [N] of the target's phi under the IN vs OUT Gaussians (per-candidate
    means, pooled variances). Candidates without IN or OUT shadows fall back to the pooled
    mean of that side."""
    in_count, out_count = in_mask.sum(0), (~in_mask).sum(0)
    mu_in_all = shadow_phi[in_mask].mean() if in_mask.any() else 0.0
    mu_out_all = shadow_phi[~in_mask].mean() if (~in_mask).any() else 0.0
    mu_in = np.where(in_count > 0, (shadow_phi * in_mask).sum(0) / np.maximum(in_count, 1),
                     mu_in_all)
    mu_out = np.where(out_count > 0, (shadow_phi * ~in_mask).sum(0) / np.maximum(out_count, 1),
                      mu_out_all)
    var_in = _pooled_var(shadow_phi, in_mask, mu_in)
    var_out = _pooled_var(shadow_phi, ~in_mask, mu_out)
    log_in = -0.5 * ((target_phi - mu_in) ** 2 / var_in + np.log(var_in))
    log_out = -0.5 * ((target_phi - mu_out) ** 2 / var_out + np.log(var_out))
    return log_in - log_out


def _pooled_var(phi: np.ndarray, mask: np.ndarray, mu: np.ndarray) -> float:
    resid = (phi - mu[None]) ** 2
    return float(resid[mask].mean()) + 1e-6 if mask.any() else 1.0

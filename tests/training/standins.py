"""Tiny stand-ins with the INTERFACES.md shapes, for in-process trainer tests that must not
depend on the real model's speed: a patch MAE and an endless deterministic batch stream."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from einops import rearrange
from torch import nn


@dataclass
class TinyConfig:
    patch_size: int = 4
    bands: int = 5
    dim: int = 16


class TinyMAE(nn.Module):
    """Linear patch autoencoder with random masking; loss on masked patches (MSE)."""

    def __init__(self, cfg: TinyConfig | None = None, nan_at_calls=()):
        super().__init__()
        self.config = cfg or TinyConfig()
        k, c, d = self.config.patch_size, self.config.bands, self.config.dim
        self.encoder = nn.Linear(c * k * k, d)
        self.encoder.patch_size = k
        self.decoder = nn.Linear(d, c * k * k)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.nan_at_calls, self.calls = set(nan_at_calls), 0

    def forward(self, batch, mask_ratio=None):
        k = self.config.patch_size
        x = batch["image"]
        h = x.shape[-2] // k
        patches = rearrange(x, "b c (h k1) (w k2) -> b (h w) (c k1 k2)", k1=k, k2=k)
        mask = torch.rand(patches.shape[:2], device=x.device) < (mask_ratio or 0.75)
        tokens = self.encoder(patches)
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        recon = self.decoder(tokens)
        err = ((recon.float() - patches.float()) ** 2).mean(-1)
        loss = (err * mask).sum() / mask.sum().clamp(min=1)
        self.calls += 1
        if self.calls in self.nan_at_calls:
            loss = loss * float("nan")
        pred = rearrange(recon, "b (h w) (c k1 k2) -> b c (h k1) (w k2)", h=h, k1=k, k2=k)
        return SimpleNamespace(loss=loss, parts={"mse": loss.detach()}, pred=pred, mask=mask,
                               metrics={"router/entropy": 0.5})


class TinyStream:
    """Endless batches, a pure function of (seed, rank); `stats` like the real loader."""

    def __init__(self, seed: int, rank: int, batch_size: int = 4, bands: int = 5, size: int = 16):
        self.g = torch.Generator().manual_seed(seed * 100 + rank)
        self.b, self.c, self.s = batch_size, bands, size
        self.stats = {"seen": 0, "skipped": 0}

    def __iter__(self):
        while True:
            self.stats["seen"] += self.b
            base = torch.linspace(0.1, 0.5, self.c)[None, :, None, None]
            image = base + 0.05 * torch.randn(self.b, self.c, self.s, self.s, generator=self.g)
            yield {"image": image, "valid": torch.ones_like(image, dtype=torch.bool),
                   "band_mask": torch.ones(self.b, self.c, dtype=torch.bool),
                   "wavelength": torch.linspace(450, 900, self.c).repeat(self.b, 1),
                   "fwhm": torch.full((self.b, self.c), 10.0), "gsd": torch.full((self.b,), 30.0),
                   "sensor": ["enmap"] * self.b, "level": ["L2"] * self.b, "meta": [{}] * self.b}


def tiny_data(cfg, env, start_step):
    from specaware.training.trainer import segment_seed
    return TinyStream(segment_seed(cfg.train.seed, start_step), env.rank, cfg.data.batch_size)

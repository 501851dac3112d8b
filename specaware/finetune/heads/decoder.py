"""UPerNet-style decoder over plain-ViT features (Xiao et al. 2018, UPerNet; the ViT feature
pyramid follows the usual practice of resampling one-scale ViT maps to 4 scales).

Input: L maps [b, d, h, w] from `forward_intermediates` (all at 1/k of the image). Each level is
resampled to its own scale (for 4 levels: x4, x2, x1, x1/2), projected to the decoder width,
a pyramid pooling module (PPM) runs on the coarsest level, an FPN merges top-down, and all
levels are fused at the finest scale -> logits [b, classes, h*s0, w*s0].

Letters: b batch, d encoder width, f decoder width, h w token grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    # GroupNorm, not BatchNorm: fine-tuning batches are small and PPM's 1x1 bin would leave
    # BatchNorm one value per channel at batch size 1.
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


def _resampler(d: int, scale: float) -> nn.Module:
    """x2^m by transposed convs, /2 by max-pool, x1 identity."""
    if scale >= 1:
        layers: list[nn.Module] = []
        s = 1
        while s < scale:
            layers += [nn.ConvTranspose2d(d, d, 2, stride=2), nn.GELU()]
            s *= 2
        return nn.Sequential(*layers) if layers else nn.Identity()
    return nn.MaxPool2d(2, ceil_mode=True)


def level_scales(levels: int) -> list[float]:
    """Finest first: 4 levels -> [4, 2, 1, 0.5]; 1 level -> [1]."""
    return [2.0 ** (levels - 2 - i) if levels > 1 else 1.0 for i in range(levels)]


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: average-pool to bins, project, upsample, concatenate, fuse."""

    def __init__(self, cin: int, width: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = bins
        self.stages = nn.ModuleList(_conv(cin, width, 1) for _ in bins)
        self.fuse = _conv(cin + width * len(bins), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear",
                                align_corners=False) for b, stage in zip(self.bins, self.stages)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class UPerDecoder(nn.Module):
    """Multi-level ViT features -> class logits at the finest pyramid scale."""

    def __init__(self, in_dim: int, levels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.scales = level_scales(levels)
        self.resample = nn.ModuleList(_resampler(in_dim, s) for s in self.scales)
        self.lateral = nn.ModuleList(_conv(in_dim, width, 1) for _ in self.scales[:-1])
        self.ppm = PyramidPooling(in_dim, width)
        self.smooth = nn.ModuleList(_conv(width, width) for _ in self.scales[:-1])
        self.fuse = _conv(width * levels, width)
        self.classify = nn.Conv2d(width, num_classes, 1)
        self.finest_scale = self.scales[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """feats: L maps [b, d, h, w] -> logits [b, classes, h*s0, w*s0]."""
        if len(feats) != len(self.scales):
            raise ValueError(f"decoder built for {len(self.scales)} levels, got {len(feats)}")
        pyramid = [r(f) for r, f in zip(self.resample, feats)]
        laterals = [lat(x) for lat, x in zip(self.lateral, pyramid[:-1])] + [self.ppm(pyramid[-1])]
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False)
        outs = [s(x) for s, x in zip(self.smooth, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False)
                            for o in outs[1:]]
        return self.classify(self.fuse(torch.cat(outs, dim=1)))

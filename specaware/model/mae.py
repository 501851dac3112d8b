"""SpecAware masked autoencoder with a cross-sensor objective (docs/DESIGN.md section 2).

    forward(batch) = forward_encoder -> decoder -> forward_loss (head on hidden patches + loss)
  - random patch masking (ratio 0.75 by default), independent per sample;
  - the encoder sees the visible patches of the INPUT view only;
  - a narrow decoder (optionally Soft-MoE) over all patch positions (mask tokens elsewhere);
  - the hyper output head reconstructs the TARGET view's bands: batch["target"] when present
    (another sensor's view of the same ground: CSMoE's cross-sensor MAE), else the input view;
  - loss on masked patches and valid target pixels (loss.py); only those patches are predicted
    in the step, `MAEOutput.pred` (every patch) is built when first read;
  - the target is standardised with statistics of its VISIBLE patches (target_norm.py), so
    nothing on the prediction side of the loss depends on a hidden target pixel.

Letters: b batch, c bands, n patches, p patch pixels (k*k), d encoder width, dd decoder width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch
from torch import Tensor, nn

from specaware.model.block import Block, make_mlp
from specaware.model.config import MAEConfig
from specaware.model.encoder import EncoderOutput, SpecAwareEncoder
from specaware.model.hyper_head import HeadFactors, HyperOutputHead
from specaware.model.inputs import BandInputs
from specaware.model.loss import reconstruction_loss
from specaware.model.masking import (gather_patches, hidden_indices,
                                     random_masking, scatter_tokens, unpatchify)
from specaware.model.pos_embed import MetricPositionEmbedding
from specaware.model.target_norm import destandardise, target_statistics


@dataclass
class MAEOutput:
    loss: Tensor                    # [] weighted total
    parts: dict[str, Tensor]        # "sam", "charbonnier" | "mse"
    mask: Tensor                    # bool [b, n] True = hidden from the encoder
    routing: dict = field(default_factory=dict, repr=False)  # name -> moe.RoutingMetrics
    reconstruct: Callable[[], Tensor] | None = field(default=None, repr=False)

    @cached_property
    def pred(self) -> Tensor:
        """[b, c_target, H, W] reconstruction of every patch, target's units, no gradient.
        Built on first access from values the step kept (detached, so later optimiser steps do
        not change it): a training step that does not look at it pays nothing for it."""
        return self.reconstruct()

    @property
    def metrics(self) -> dict[str, float]:
        """Soft-MoE routing metrics, flattened: "encoder.block6.dispatch_entropy", ...
        Computed on access (a step that does not log pays nothing)."""
        flat = {}
        for layer, metrics in self.routing.items():
            flat.update({f"{layer}.{k}": v for k, v in metrics.as_dict().items()})
        return flat


class MAEDecoder(nn.Module):
    """Encoder tokens of visible patches -> decoder tokens of every patch [b, n, dd]."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        dc = cfg.decoder
        self.has_cls = cfg.cls_token
        self.embed = nn.Linear(cfg.embed_dim, dc.embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(dc.embed_dim))
        self.pos_embed = MetricPositionEmbedding(dc.embed_dim, cfg.pos_min_period_m,
                                                 cfg.pos_max_period_m)
        moe_ids = set(range(dc.depth // 2, dc.depth)) if dc.moe else set()
        hidden = int(dc.embed_dim * dc.mlp_ratio)
        self.blocks = nn.ModuleList([
            Block(dc.embed_dim, dc.num_heads,
                  mlp=make_mlp(dc.embed_dim, hidden, moe=i in moe_ids,
                               num_experts=dc.moe_num_experts,
                               slots_per_expert=dc.moe_slots_per_expert, expert=cfg.moe.expert))
            for i in range(dc.depth)])
        self.norm = nn.LayerNorm(dc.embed_dim)
        self.patch_size = cfg.patch_size
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, encoded: EncoderOutput, inputs: BandInputs):
        """-> (tokens [b, n, dd] without cls, routing metrics)."""
        x = self.embed(encoded.tokens)
        prefix, x = (x[:, :1], x[:, 1:]) if self.has_cls else (x[:, :0], x)
        n = inputs.num_patches
        if encoded.keep is not None:
            x = scatter_tokens(x, encoded.keep, self.mask_token, n)
        x = x + self.pos_embed(*inputs.grid, self.patch_size, inputs.gsd).to(x.dtype)
        x = torch.cat([prefix, x], dim=1)
        routing = {}
        for i, block in enumerate(self.blocks):
            x, metrics = block(x)
            if metrics:
                routing[f"decoder.block{i}"] = metrics
        return self.norm(x)[:, prefix.shape[1]:], routing


class MaskedAutoencoder(nn.Module):
    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = SpecAwareEncoder(cfg)
        self.decoder = MAEDecoder(cfg)
        self.head = HyperOutputHead(cfg.conditioning, len(self.encoder.sensors),
                                    len(self.encoder.levels), cfg.decoder.embed_dim,
                                    cfg.patch_size, cfg.rank, cfg.hyper_hidden)

    def forward(self, batch: dict, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> MAEOutput:
        """batch: INTERFACES.md dict (optional batch["target"] view). mask_ratio None = config.
        `generator` (on the batch's device) makes the masking reproducible on its own."""
        inputs = self.encoder.prepare(batch)
        target = self.encoder.prepare(batch["target"]) if batch.get("target") else inputs
        self._check_target(inputs, target)
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        keep, mask = random_masking(inputs.patches.shape[0], inputs.num_patches, ratio,
                                    inputs.patches.device, generator)
        encoded = self.forward_encoder(inputs, keep)
        tokens, routing = self.decoder(encoded, inputs)
        stats = target_statistics(target, keep, self.config.loss.target_norm,
                                  encoded.stats if target is inputs else None)
        loss, parts, rebuild = self.forward_loss(tokens, target, mask, keep.shape[1], stats,
                                                 inputs.grid)
        return MAEOutput(loss, parts, mask, {**encoded.routing, **routing}, rebuild)

    def forward_loss(self, tokens: Tensor, target: BandInputs, mask: Tensor, num_keep: int,
                     stats: dict[str, Tensor], grid: tuple[int, int]):
        """Decoder tokens [b, n, dd] + target statistics (`target_norm.target_statistics`)
        -> (loss, parts, closure rebuilding `pred`).

        The loss sees the hidden patches only: the head runs on their tokens, and the pixels of
        hidden patches are read as the target only, never for the statistics the prediction is
        de-standardised with; the reconstruction of every patch is made on demand from the
        detached projection."""
        hidden = hidden_indices(mask, mask.shape[1] - num_keep)
        pred_std, projected, factors = self.head(tokens, target, hidden)
        loss, parts = reconstruction_loss(pred_std, gather_patches(target.patches, hidden),
                                          gather_patches(target.valid, hidden), stats, None,
                                          self.config.loss, zeroed=True)
        rebuild = self._reconstruction(projected.detach(), factors.detach(), stats, grid[1])
        return loss, parts, rebuild

    def _reconstruction(self, projected: Tensor, factors: HeadFactors,
                        stats: dict[str, Tensor], grid_w: int) -> Callable[[], Tensor]:
        """A closure giving the [b, c, H, W] reconstruction of every patch from detached values."""
        def build() -> Tensor:
            with torch.no_grad():
                pred_std = self.head.pixels(projected, factors).float()
                return unpatchify(destandardise(pred_std, stats), self.config.patch_size, grid_w)
        return build

    def forward_encoder(self, inputs: BandInputs, keep: Tensor) -> EncoderOutput:
        return self.encoder(inputs, keep)

    def forward_decoder(self, encoded: EncoderOutput, inputs: BandInputs, target: BandInputs):
        """-> (standardised prediction of the target view [b, c_t, n, p], routing metrics), for
        every patch (inspection, tests); a training `forward` predicts the hidden ones only."""
        tokens, routing = self.decoder(encoded, inputs)
        return self.head(tokens, target), routing

    @staticmethod
    def _check_target(inputs: BandInputs, target: BandInputs) -> None:
        if target is inputs:
            return
        if target.patches.shape[0] != inputs.patches.shape[0] or target.grid != inputs.grid:
            raise ValueError(
                f"batch['target'] must cover the same samples and pixels as batch['image']: "
                f"image {inputs.patches.shape[0]} x grid {inputs.grid}, target "
                f"{target.patches.shape[0]} x grid {target.grid}; resample the target view "
                f"to the input's H, W")

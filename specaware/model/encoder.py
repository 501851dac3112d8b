"""SpecAware encoder: band conditioning -> HyperEmbedding -> ViT with Soft-MoE MLPs.

docs/DESIGN.md section 2. Stages of `forward`:
  1. per-band statistics of the visible patches (valid pixels only) -> content features, and the
     per-sample/per-band standardisation of the pixels (the model sees spectral shape through
     the condition z, spatial pattern through the standardised pixels);
  2. meta-content conditioning z [b, c, dz];
  3. HyperEmbedding of the visible patches only + GSD-scaled positions in metres;
     bands without a valid visible pixel weigh like padding in steps 2 and 3, and each token
     averages over the bands with a valid pixel in its patch;
  4. pre-norm blocks (Soft-MoE MLPs where `moe_block_ids` says), optional cls token, norm.
Masked patches are gathered away before step 1, so they can influence nothing.

Prompt tokens (visual prompt tuning, Jia et al. 2022, sec. 3.2) are a hook for fine-tuning:
`prompts` [b, m, d] enter after the cls token and before the patches, without positions;
[depth, b, m, d] gives each block its own prompts, replacing the previous block's prompt outputs
(VPT-Deep). `specaware.finetune.prompts` owns the learnable tokens.

Fine-tuning surface (timm-style): `forward_features`, `forward_intermediates`.

Letters: b batch, c bands, n patches, p patch pixels (k*k), d width, dz condition width,
m prompt tokens, l blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from specaware.model.block import Block, make_mlp
from specaware.model.conditioning import (BandConditioning, Vocabulary, band_statistics,
                                          content_features, sensor_alias, standardise)
from specaware.model.config import MAEConfig
from specaware.model.hyper_embed import HyperEmbedding
from specaware.model.inputs import BandInputs, prepare_inputs
from specaware.model.masking import gather_patches, gather_tokens
from specaware.model.pos_embed import MetricPositionEmbedding


@dataclass
class EncoderOutput:
    tokens: Tensor                 # [b, (1 +) (m +) n_keep, d] after the final norm (cls, prompts)
    keep: Tensor | None            # [b, n_keep] visible patch indices, None = all patches
    z: Tensor                      # [b, c, dz] band conditions
    stats: dict[str, Tensor]       # band statistics of the visible patches
    routing: dict                  # "encoder.block{i}" -> moe.RoutingMetrics
    num_prompts: int = 0           # m prompt tokens after the cls token


class SpecAwareEncoder(nn.Module):
    # refuse micrometre wavelengths instead of converting them; None = SPECAWARE_STRICT_UNITS
    strict_units: bool | None = None

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.patch_size, self.embed_dim, self.depth = cfg.patch_size, cfg.embed_dim, cfg.depth
        self.sensors = Vocabulary(cfg.sensors, canonicalise=sensor_alias)
        self.levels = Vocabulary(cfg.levels)
        self.conditioning = BandConditioning(cfg.conditioning, len(self.sensors),
                                             len(self.levels))
        self.embed = HyperEmbedding(cfg.conditioning.cond_dim, cfg.embed_dim, cfg.patch_size,
                                    cfg.rank, cfg.hyper_hidden)
        self.pos_embed = MetricPositionEmbedding(cfg.embed_dim, cfg.pos_min_period_m,
                                                 cfg.pos_max_period_m)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.cls_token else None
        self.num_prefix_tokens = 1 if cfg.cls_token else 0
        moe_ids = set(cfg.moe_block_ids())
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.blocks = nn.ModuleList([
            Block(cfg.embed_dim, cfg.num_heads, drop_path=cfg.drop_path * i / max(cfg.depth - 1, 1),
                  mlp=make_mlp(cfg.embed_dim, hidden, moe=i in moe_ids,
                               num_experts=cfg.moe.num_experts,
                               slots_per_expert=cfg.moe.slots_per_expert, expert=cfg.moe.expert))
            for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.embed_dim)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def prepare(self, batch: dict) -> BandInputs:
        """Batch dict (INTERFACES.md) -> validated, patchified `BandInputs`."""
        return prepare_inputs(batch, self.patch_size, self.sensors, self.levels,
                              self.strict_units)

    def embed_visible(self, inputs: BandInputs, keep: Tensor | None = None):
        """Tokens of the visible patches [b, n_keep, d] (positions added), z, statistics."""
        x, valid = inputs.patches, inputs.valid
        if keep is not None:
            x, valid = gather_patches(x, keep), gather_patches(valid, keep)
        stats = band_statistics(x, valid, inputs.band_mask, zeroed=True)
        # a band without a valid visible pixel (absorption band, nodata) weighs like padding
        present = inputs.band_mask & (stats["valid_frac"] > 0)
        z = self.conditioning(inputs.wavelength, inputs.fwhm, inputs.sensor, inputs.level,
                              present, content_features(stats))
        tokens = self.embed(standardise(x, valid, stats), z, present, valid)
        pos = self.pos_embed(*inputs.grid, self.patch_size, inputs.gsd).to(tokens.dtype)
        if keep is not None:
            pos = gather_tokens(pos, keep)
        return tokens + pos, z, stats

    def forward(self, batch_or_inputs, keep: Tensor | None = None,
                return_layers: list[int] | None = None, prompts: Tensor | None = None):
        """Encode the patches in `keep` (all when None). Returns `EncoderOutput`; with
        `return_layers` also the list of block outputs (before the final norm) at those ids.
        `prompts`: None, [b, m, d] before block 0, or [l, b, m, d] one set per block."""
        inputs = (batch_or_inputs if isinstance(batch_or_inputs, BandInputs)
                  else self.prepare(batch_or_inputs))
        x, z, stats = self.embed_visible(inputs, keep)
        deep = self._check_prompts(prompts, x)
        if prompts is not None:
            x = torch.cat([(prompts[0] if deep else prompts).to(x.dtype), x], dim=1)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        routing, layers = {}, []
        for i, block in enumerate(self.blocks):
            if deep and i > 0:
                x = self._replace_prompts(x, prompts[i])
            x, metrics = block(x)
            if metrics:
                routing[f"encoder.block{i}"] = metrics
            if return_layers is not None and i in return_layers:
                layers.append(x)
        m = 0 if prompts is None else prompts.shape[-2]
        out = EncoderOutput(self.norm(x), keep, z, stats, routing, num_prompts=m)
        return (out, layers) if return_layers is not None else out

    def _check_prompts(self, prompts: Tensor | None, x: Tensor) -> bool:
        """True for deep prompts [l, b, m, d]; raises on any other shape than [b, m, d]."""
        if prompts is None:
            return False
        b, d = x.shape[0], self.embed_dim
        deep = prompts.ndim == 4
        ok = (prompts.shape[-1] == d and prompts.shape[-3] == b
              and (prompts.ndim == 3 or deep and prompts.shape[0] == self.depth))
        if not ok:
            raise ValueError(f"prompts of shape {tuple(prompts.shape)}: expected [b={b}, m, d={d}]"
                             f" or [l={self.depth}, b={b}, m, d={d}] (one set per block)")
        return deep

    def _replace_prompts(self, x: Tensor, prompts: Tensor) -> Tensor:
        """x [b, (1 +) m + n, d] with its m prompt outputs swapped for this block's prompts."""
        p, m = self.num_prefix_tokens, prompts.shape[1]
        return torch.cat([x[:, :p], prompts.to(x.dtype), x[:, p + m:]], dim=1)

    def forward_features(self, batch: dict, prompts: Tensor | None = None) -> Tensor:
        """All patches, no masking -> [b, n, d] (cls token and prompt outputs dropped)."""
        out = self(batch, prompts=prompts)
        return out.tokens[:, self.num_prefix_tokens + out.num_prompts:]

    def forward_intermediates(self, batch: dict, indices=None, norm: bool = True,
                              prompts: Tensor | None = None) -> list[Tensor]:
        """Feature maps [b, d, H/k, W/k] after the given blocks, for dense heads.

        indices: None -> 4 evenly spaced blocks ending with the last; int n -> the last n blocks;
        list -> those block indices (negative counts from the end). prompts: as in `forward`.
        """
        ids = self._intermediate_ids(indices)
        inputs = self.prepare(batch)
        out, layers = self(inputs, return_layers=ids, prompts=prompts)
        h, w = inputs.grid
        skip = self.num_prefix_tokens + out.num_prompts
        maps = []
        for x in layers:
            x = self.norm(x) if norm else x
            maps.append(rearrange(x[:, skip:], "b (h w) d -> b d h w", h=h, w=w))
        return maps

    def _intermediate_ids(self, indices) -> list[int]:
        depth = self.depth
        if indices is None:
            n = min(4, depth)
            return sorted({depth - 1 - round(i * depth / n) for i in range(n)})
        if isinstance(indices, int):
            if not 1 <= indices <= depth:
                raise ValueError(f"forward_intermediates: asked for the last {indices} blocks "
                                 f"of a depth-{depth} encoder")
            return list(range(depth - indices, depth))
        bad = [i for i in indices if not -depth <= i < depth]
        if bad:
            raise ValueError(f"forward_intermediates: block indices {bad} out of range for "
                             f"depth {depth}")
        return sorted({i % depth for i in indices})

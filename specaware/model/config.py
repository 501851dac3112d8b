"""The model's typed configuration (one dataclass tree; docs/DESIGN.md section 2).

`MAEConfig` is what `mae.config` holds, what `specaware.config.to_dict` turns into the JSON that
travels with every export, and what `variants.create_model_from_config` rebuilds a model from.
Every field has a default, so an old export missing a newer key still loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

# Sensor vocabulary of the embedding table. Fixed here (and stored in every config) rather than
# read from the catalogue at build time, so adding a sensor file never changes the shape of a
# trained model's table. Names outside it map to "unknown".
CANONICAL_SENSORS = [
    "aviris-classic", "aviris-ng", "aviris-3", "enmap", "prisma", "emit", "hyperion", "desis",
    "sentinel-2a", "sentinel-2b", "landsat-8", "landsat-9", "landsat-7",
]
CANONICAL_LEVELS = ["L1", "L2"]


@dataclass
class ConditioningConfig:
    """Meta-content conditioning -> z [b, c, cond_dim] (docs/DESIGN.md section 2, steps 1-3)."""
    cond_dim: int = 128              # dz, width of one band's condition vector
    fourier_features: int = 32       # sin/cos pairs of wavelength
    min_period_nm: float = 10.0      # finest wavelength period, below typical band spacing x2
    max_period_nm: float = 4400.0    # coarsest period: twice the 350-2550 nm span, so monotonic
    heads: int = 4                   # heads of the one transformer layer across bands


@dataclass
class MoEConfig:
    """Soft-MoE MLPs (package `moe`). `blocks=None` puts them in the last half of the stack.

    Cost follows total slots (experts * slots_per_expert), not experts. With a 128 px tile,
    patch 8 and ratio 0.75 the encoder sees 64 tokens in pretraining and 256 in fine-tuning:
    64 slots cost as much as a dense MLP in pretraining and a quarter of it in fine-tuning.
    """
    blocks: Optional[list[int]] = None
    num_experts: int = 8
    slots_per_expert: int = 8
    expert: Literal["mlp", "swiglu"] = "mlp"


@dataclass
class DecoderConfig:
    embed_dim: int = 256
    depth: int = 4
    num_heads: int = 8
    mlp_ratio: float = 4.0
    moe: bool = False                 # Soft-MoE in the decoder (blocks chosen by moe.blocks rule)
    moe_num_experts: int = 8
    moe_slots_per_expert: int = 16    # decoder sees all tokens: more slots than the encoder


@dataclass
class LossConfig:
    """Loss on masked patches and valid pixels only.

    pixel: "charbonnier" or "mse" on per-sample normalised target values;
    sam: 1 - cosine over valid bands of each pixel's spectrum, in physical units;
    target_norm: how the target is normalised per sample, from all its valid pixels:
      "sample" (default) one mean and std over all bands: the spectrum's shape stays in the
               target, so the model must carry it from the visible patches (see loss.py);
      "band"   each band by its own mean and std: the tile's mean spectrum is given away and
               only deviations from it are predicted (balances bright and dark bands).
    """
    pixel: Literal["charbonnier", "mse"] = "charbonnier"
    target_norm: Literal["band", "sample"] = "sample"
    pixel_weight: float = 1.0
    sam_weight: float = 1.0
    charbonnier_eps: float = 1e-3


@dataclass
class MAEConfig:
    patch_size: int = 8
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    rank: int = 16                    # r of the HyperEmbedding factors U_c [d, r], V_c [r, k*k]
    hyper_hidden: int = 128           # width of the hypernetwork features feeding U_c
    cls_token: bool = False
    mask_ratio: float = 0.75
    # sin-cos positions: periods per sample from 2 patch spacings to 4 tile extents
    # (pos_embed.py), clipped to these bounds in metres
    pos_min_period_m: float = 1.0
    pos_max_period_m: float = 1e7
    drop_path: float = 0.0
    sensors: list[str] = field(default_factory=lambda: list(CANONICAL_SENSORS))
    levels: list[str] = field(default_factory=lambda: list(CANONICAL_LEVELS))
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    name: str = "custom"              # variant this config came from (informational)

    def moe_block_ids(self, depth: int | None = None) -> list[int]:
        """Indices of blocks with a Soft-MoE MLP: `moe.blocks`, else the last half."""
        depth = self.depth if depth is None else depth
        if self.moe.blocks is None:
            return list(range(depth // 2, depth))
        bad = [i for i in self.moe.blocks if not -depth <= i < depth]
        if bad:
            raise ValueError(f"config key 'moe.blocks': {bad} out of range for depth {depth}")
        return sorted({i % depth for i in self.moe.blocks})

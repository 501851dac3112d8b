"""Named model sizes in one registry (timm `@register_model` style; docs/DESIGN.md section 2).

    create_model("specaware_base", depth=6, decoder={"depth": 2})   # overrides: nested or "a.b"
    create_model_from_config(to_dict(mae.config))                   # rebuild from an export

Widths/depths follow ViT (tiny 192, small 384, base 768, large 1024); patch 8 everywhere.
Soft-MoE in the last half of the encoder with 8 experts x 8 slots = 64 slots: the 64 visible
tokens of a 128 px tile in pretraining (ratio 0.75) cost as much as a dense MLP, the 256 tokens
of fine-tuning a quarter of one, while parameters grow 8x in those MLPs.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from specaware.config import from_dict, merge
from specaware.model.config import (ConditioningConfig, DecoderConfig, MAEConfig, MoEConfig)

_REGISTRY: dict[str, Callable[[], MAEConfig]] = {}


def register(fn: Callable[[], MAEConfig]) -> Callable[[], MAEConfig]:
    _REGISTRY[fn.__name__] = fn
    return fn


@register
def specaware_debug() -> MAEConfig:
    """CPU tests in seconds: width 64, depth 2 (block 1 Soft-MoE), decoder 32 x 1."""
    return MAEConfig(
        patch_size=8, embed_dim=64, depth=2, num_heads=4, rank=8, hyper_hidden=32,
        conditioning=ConditioningConfig(cond_dim=32, fourier_features=8, heads=2),
        moe=MoEConfig(num_experts=4, slots_per_expert=4),
        decoder=DecoderConfig(embed_dim=32, depth=1, num_heads=2, moe_num_experts=2,
                              moe_slots_per_expert=4))


@register
def specaware_tiny() -> MAEConfig:
    return MAEConfig(
        patch_size=8, embed_dim=192, depth=12, num_heads=3, rank=16, hyper_hidden=64,
        conditioning=ConditioningConfig(cond_dim=64, fourier_features=16, heads=4),
        decoder=DecoderConfig(embed_dim=128, depth=2, num_heads=4))


@register
def specaware_small() -> MAEConfig:
    return MAEConfig(
        patch_size=8, embed_dim=384, depth=12, num_heads=6, rank=16, hyper_hidden=128,
        decoder=DecoderConfig(embed_dim=256, depth=4, num_heads=8))


@register
def specaware_base() -> MAEConfig:
    """ViT-B width and depth, patch 8."""
    return MAEConfig(
        patch_size=8, embed_dim=768, depth=12, num_heads=12, rank=16, hyper_hidden=128,
        decoder=DecoderConfig(embed_dim=512, depth=4, num_heads=16))


@register
def specaware_large() -> MAEConfig:
    return MAEConfig(
        patch_size=8, embed_dim=1024, depth=24, num_heads=16, rank=32, hyper_hidden=128,
        decoder=DecoderConfig(embed_dim=512, depth=8, num_heads=16))


def list_models() -> list[str]:
    return list(_REGISTRY)


def _nest(overrides: dict) -> dict:
    """{"decoder.depth": 2} -> {"decoder": {"depth": 2}}; nested dicts pass through."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return out


def unknown_model_message(name: str) -> str:
    """'unknown model ...' with the closest registered names first (a typo names its fix)."""
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown model {name!r}{hint} (registered: {', '.join(_REGISTRY)})"


def model_config(name: str, **overrides) -> MAEConfig:
    """Config of a registered variant with overrides applied (unknown keys are errors)."""
    return resolve_model_config(name, overrides)


def resolve_model_config(name: str, overrides: dict, prefix: str = "") -> MAEConfig:
    """`model_config` with the overrides as a mapping; errors name keys as `prefix` + key (a
    pretraining config passes "model.overrides.", so a typo is reported where the user wrote it)."""
    if name not in _REGISTRY:
        raise KeyError(unknown_model_message(name))
    cfg = merge(_REGISTRY[name](), _nest(overrides), prefix=prefix)
    return dataclasses.replace(cfg, name=name)


def create_model(name: str, **overrides):
    """Build a registered variant -> MaskedAutoencoder (see `list_models()`)."""
    from specaware.model.mae import MaskedAutoencoder
    return MaskedAutoencoder(model_config(name, **overrides))


def create_model_from_config(config) -> "MaskedAutoencoder":  # noqa: F821
    """MaskedAutoencoder from `to_dict(mae.config)` (e.g. an export's JSON) or an MAEConfig."""
    from specaware.model.mae import MaskedAutoencoder
    cfg = config if isinstance(config, MAEConfig) else from_dict(MAEConfig, dict(config))
    return MaskedAutoencoder(cfg)


def model_stats(name_or_model, bands: int = 224, tile: int = 128, **kwargs) -> dict:
    """Parameters and forward FLOPs per tile (see `flops.model_stats`)."""
    from specaware.model.flops import model_stats as _stats
    return _stats(name_or_model, bands=bands, tile=tile, **kwargs)

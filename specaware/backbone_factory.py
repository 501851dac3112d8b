"""`specaware.create_model(name, features_only=True, ...)`: a backbone from a variant, with or
without pretrained weights, and its registration in TerraTorch's backbone registry.

The architecture comes from the variant name (plus config overrides such as `depth=6`), or,
with `pretrained=`, from the checkpoint itself: whatever `specaware.load_pretrained` reads (an export,
`OUT.safetensors` + `OUT.json`, or a hub folder or repo id, specaware.hub).
"""
from __future__ import annotations

import logging

from specaware.backbone import SpecAwareBackbone

log = logging.getLogger(__name__)

BACKBONE_ARGS = frozenset({"out_indices", "wavelengths", "fwhm", "gsd", "sensor", "level", "norm",
                           "strict_units", "pretrained"})


def create_backbone(name: str | None, pretrained=None, out_indices=None, wavelengths=None, fwhm=None,
                    gsd=None, sensor=None, level: str = "L2", norm: bool = True,
                    strict_units: bool | None = None, **overrides) -> SpecAwareBackbone:
    """SpecAwareBackbone of variant `name` (config `overrides` allowed without `pretrained`);
    name None with `pretrained`: whatever variant the checkpoint holds."""
    band_args = dict(out_indices=out_indices, wavelengths=wavelengths, fwhm=fwhm, gsd=gsd,
                     sensor=sensor, level=level, norm=norm, strict_units=strict_units)
    if pretrained in (None, False, ""):
        if name is None:
            raise ValueError("create_backbone: give a variant name or pretrained=")
        from specaware.config import to_dict
        from specaware.model.variants import model_config
        return SpecAwareBackbone(to_dict(model_config(name, **overrides)), variant=name,
                                 **band_args)
    if pretrained is True:
        raise ValueError("pretrained=True: specaware ships no default weights; pass a path "
                         "(export .safetensors, hub folder) or a hub repo id")
    if overrides:
        raise ValueError(f"create_model({name!r}, pretrained=...): the architecture comes from "
                         f"the checkpoint, so config overrides {sorted(overrides)} cannot apply")
    from specaware.finetune.api import load_pretrained
    encoder = load_pretrained(pretrained)
    source = encoder.specaware_source
    trained_as = source.get("model")
    if name is not None and trained_as and trained_as != name:
        raise ValueError(f"{pretrained} holds a {trained_as!r} encoder, not {name!r}; call "
                         f"create_model({trained_as!r}, pretrained=...)")
    backbone = SpecAwareBackbone(source["model_config"], variant=trained_as or name,
                                 pretraining=source.get("pretraining"), **band_args)
    encoder.strict_units = strict_units
    backbone.encoder = encoder
    return backbone


def _constructor(variant: str):
    def build(pretrained=None, **kwargs) -> SpecAwareBackbone:
        kwargs.pop("features_only", None)
        return create_backbone(variant, pretrained=pretrained, **kwargs)
    build.__name__ = build.__qualname__ = variant
    build.__doc__ = f"SpecAware backbone `{variant}` (see specaware.create_model)."
    return build


def register_terratorch(registry=None) -> list[str]:
    """Register every variant in TerraTorch's backbone registry (TERRATORCH_BACKBONE_REGISTRY
    by default; its `register` keys constructors by `__name__`). Returns the names registered,
    [] when TerraTorch is not installed. Build with `BACKBONE_REGISTRY.build("specaware_base",
    sensor="enmap", pretrained=...)`; the backbone has `out_channels` and returns a list of
    maps, which is what TerraTorch's EncoderDecoderFactory needs."""
    if registry is None:
        try:
            from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY as registry
        except ImportError:
            return []
    from specaware.model.variants import list_models
    names = []
    for variant in list_models():
        if variant not in registry:
            registry.register(_constructor(variant))
        names.append(variant)
    return names

"""specaware: hyperspectral foundation models over any band set.

    import specaware
    model = specaware.create_model("specaware_debug")
    encoder = specaware.load_pretrained("run/export.safetensors")
"""
from specaware.version import __version__

__all__ = ["create_model", "list_models", "load_pretrained", "__version__"]


def create_model(name: str, features_only: bool | None = None, **kwargs):
    """Build a registered variant (see `list_models()`); keyword overrides change its config.

    Returns the MaskedAutoencoder, or with `features_only=True` (or any backbone argument:
    out_indices, wavelengths, fwhm, gsd, sensor, level, norm, strict_units, pretrained) a
    `specaware.backbone.SpecAwareBackbone` mapping [B, C, H, W] to feature maps (timm style).
    """
    from specaware.backbone_factory import BACKBONE_ARGS, create_backbone
    wants_backbone = features_only or any(k in kwargs for k in BACKBONE_ARGS)
    if not wants_backbone:
        from specaware.model.variants import create_model as _create
        return _create(name, **kwargs)
    if features_only is False:
        raise ValueError(f"create_model({name!r}, features_only=False) builds the masked "
                         f"autoencoder, which takes none of {sorted(set(kwargs) & BACKBONE_ARGS)}; "
                         "drop features_only=False to get a backbone")
    return create_backbone(name, **kwargs)


def list_models() -> list[str]:
    from specaware.model.variants import list_models as _list
    return _list()


def load_pretrained(path, **kwargs):
    """Encoder from an exported `.safetensors` + JSON (`specaware export`); never unpickles."""
    from specaware.finetune.api import load_pretrained as _load
    return _load(path, **kwargs)


def _register_in_terratorch() -> None:
    """TerraTorch users import it first; its backbone registry then lists specaware's variants
    (specaware.backbone_factory.register_terratorch; nothing is imported otherwise)."""
    import sys
    if "terratorch" in sys.modules:
        from specaware.backbone_factory import register_terratorch
        register_terratorch()


_register_in_terratorch()

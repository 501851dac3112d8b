"""specaware: hyperspectral foundation models over any band set.

    import specaware
    model = specaware.create_model("specaware_debug")
    encoder = specaware.load_pretrained("run/export.safetensors")
"""
__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_pretrained", "__version__"]


def create_model(name: str, **overrides):
    """Build a registered variant (see `list_models()`); keyword overrides change its config."""
    from specaware.model.variants import create_model as _create
    return _create(name, **overrides)


def list_models() -> list[str]:
    from specaware.model.variants import list_models as _list
    return _list()


def load_pretrained(path, **kwargs):
    """Encoder from an exported `.safetensors` + JSON (`specaware export`); never unpickles."""
    from specaware.finetune.api import load_pretrained as _load
    return _load(path, **kwargs)

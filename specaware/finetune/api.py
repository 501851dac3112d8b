"""Load a pretrained encoder for fine-tuning (docs/DESIGN.md section 5; docs/INTERFACES.md
"Export format"). The format itself is specaware/export.py's.

The source is an export: `OUT.safetensors` (fp32 state dict of the whole MaskedAutoencoder, keys
`encoder.*`, `decoder.*`, ...) with `OUT.json` beside it (`format`, `model`, `model_config`,
`step`, ...), or a hub folder / hub repo id (config.json + model.safetensors + README.md,
specaware.hub). A DeepSpeed checkpoint folder is refused with the `specaware export` command that
turns it into one: its `*.pt` files are pickles, and unpickling a crafted file runs its code.

Key matching is strict: every encoder parameter and buffer must be in the file, with the right
shape, unless it matches a pattern of `allow_missing` (fnmatch, e.g. `"norm.*"`); every `encoder.*`
key in the file must exist in the model. Nothing is ever unpickled: weights come from safetensors,
metadata from JSON. A damaged file (truncated, random bytes, a renamed pickle, a crafted header) is
one CheckpointError line naming it.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from specaware.export import CheckpointError, match_scalars, read_export

ENCODER_PREFIX = "encoder."
_SHOWN = 20  # keys listed per category in an error message


def build_model(model_config: dict | None = None, variant: str | None = None) -> nn.Module:
    """A freshly initialised MaskedAutoencoder from an exported `model_config`, else a variant
    name."""
    if model_config:
        from specaware.model.variants import create_model_from_config
        return create_model_from_config(model_config)
    if variant:
        from specaware.model.variants import create_model
        return create_model(variant)
    raise CheckpointError("cannot build a model: neither a model_config nor a variant name was "
                          "given (pass variant='specaware_debug' or a checkpoint with its JSON)")


def build_encoder(model_config: dict | None = None, variant: str | None = None) -> nn.Module:
    """A randomly initialised encoder (the `--init random` baseline), carrying its build recipe."""
    model = build_model(model_config, variant)
    return _tag(model.encoder, model, {"model": variant, "model_config": model_config})


def load_pretrained(path: str | Path, allow_missing: Iterable[str] = (),
                    map_location: str | torch.device = "cpu",
                    variant: str | None = None) -> nn.Module:
    """Encoder with pretrained weights from an export (`specaware export`).

    Args:
        path: `OUT.safetensors` (or `OUT.json`), or a hub folder or `owner/name` hub repo id.
            A DeepSpeed checkpoint folder is refused (its pickles could run code): export it
            first.
        allow_missing: fnmatch patterns of encoder keys that may be absent (with or without the
            `encoder.` prefix); everything else missing is an error.
        map_location: device the weights are loaded onto.
        variant: build this registered variant instead of the file's `model_config`.
    Returns:
        the encoder module (`forward_features`, `forward_intermediates`, `embed_dim`, ...), with
        `encoder.specaware_source` = {"path", "model", "model_config", "step"} for re-building.
    """
    path = Path(path)
    state, meta = _read_checkpoint(path, map_location)
    model = build_model(None if variant else meta.get("model_config"), variant or meta.get("model"))
    encoder = model.encoder
    wanted = encoder.state_dict()
    given = match_scalars(_encoder_part(state), wanted)
    _check_keys(path, wanted, given, tuple(allow_missing))
    encoder.load_state_dict(given, strict=False)
    encoder.to(map_location)
    info = {"path": str(path), "model": variant or meta.get("model"),
            "model_config": None if variant else meta.get("model_config"), "step": meta.get("step"),
            "pretraining": meta.get("pretraining")}
    return _tag(encoder, model, info)


def _tag(encoder: nn.Module, model: nn.Module, info: dict) -> nn.Module:
    if info.get("model_config") is None and hasattr(model, "config"):
        from specaware.config import to_dict
        info = {**info, "model_config": to_dict(model.config)}
    encoder.specaware_source = info
    return encoder


def _read_checkpoint(path: Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import specaware.hub as hub
    if hub.is_hub_folder(path) or hub.is_repo_id(str(path)):
        try:
            return hub.read_hub(path, map_location)
        except (FileNotFoundError, ValueError) as e:
            raise CheckpointError(str(e)) from e
    return read_export(path, map_location)


def _encoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder keys without their prefix; a file of bare encoder keys is accepted as is."""
    if any(k.startswith(ENCODER_PREFIX) for k in state):
        n = len(ENCODER_PREFIX)
        return {k[n:]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    return dict(state)


def _allowed(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(ENCODER_PREFIX + key, p)
               for p in patterns)


def _check_keys(path: Path, wanted: dict, given: dict, allow: tuple[str, ...]) -> None:
    missing = sorted(k for k in wanted if k not in given and not _allowed(k, allow))
    unexpected = sorted(k for k in given if k not in wanted)
    shapes = sorted(f"{ENCODER_PREFIX}{k}: file {tuple(given[k].shape)} vs model "
                    f"{tuple(wanted[k].shape)}"
                    for k in wanted if k in given and given[k].shape != wanted[k].shape)
    if not (missing or unexpected or shapes):
        return
    parts = [f"{path}: encoder weights do not match the model."]
    for title, keys in (("missing", missing), ("unexpected", unexpected),
                        ("shape mismatch", shapes)):
        if keys:
            shown = ", ".join(k if title == "shape mismatch" else ENCODER_PREFIX + k
                              for k in keys[:_SHOWN])
            more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            parts.append(f"{title} ({len(keys)}): {shown}{more}")
    parts.append("Fix: load with the variant/config the file was trained with (variant=...), or "
                 "list keys that may legitimately be absent in allow_missing=('pattern', ...)")
    raise CheckpointError("\n".join(parts))

"""Load a pretrained encoder for fine-tuning (DESIGN.md section 5, INTERFACES.md "Export format").

Two sources are accepted:
- an export: `OUT.safetensors` (fp32 state dict of the whole MaskedAutoencoder, keys `encoder.*`,
  `decoder.*`, ...) with `OUT.json` beside it (`format`, `model`, `model_config`, `step`, ...);
- a DeepSpeed checkpoint folder, consolidated by `specaware.training.export.consolidate`.

Key matching is strict: every encoder parameter and buffer must be in the file, with the right
shape, unless it matches a pattern of `allow_missing` (fnmatch, e.g. `"norm.*"`); every `encoder.*`
key in the file must exist in the model. Nothing is ever unpickled: weights come from safetensors.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

EXPORT_FORMAT = "specaware-export/1"
ENCODER_PREFIX = "encoder."
_SHOWN = 20  # keys listed per category in an error message


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file, the keys and the fix."""


def build_model(model_config: dict | None = None, variant: str | None = None) -> nn.Module:
    """A freshly initialised MaskedAutoencoder from an exported `model_config`, else a variant
    name."""
    if model_config:
        from specaware.model.variants import create_model_from_config
        return create_model_from_config(model_config)
    if variant:
        import specaware
        return specaware.create_model(variant)
    raise CheckpointError("cannot build a model: neither a model_config nor a variant name was "
                          "given (pass variant='specaware_debug' or a checkpoint with its JSON)")


def build_encoder(model_config: dict | None = None, variant: str | None = None) -> nn.Module:
    """A randomly initialised encoder (the `--init random` baseline), carrying its build recipe."""
    model = build_model(model_config, variant)
    return _tag(model.encoder, model, {"model": variant, "model_config": model_config})


def load_pretrained(path: str | Path, allow_missing: Iterable[str] = (),
                    map_location: str | torch.device = "cpu",
                    variant: str | None = None) -> nn.Module:
    """Encoder with pretrained weights from an export or a DeepSpeed checkpoint folder.

    Args:
        path: `OUT.safetensors` (or `OUT.json`), or a DeepSpeed checkpoint directory.
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
    given = _match_scalars(_encoder_part(state), wanted)
    _check_keys(path, wanted, given, tuple(allow_missing))
    encoder.load_state_dict(given, strict=False)
    encoder.to(map_location)
    info = {"path": str(path), "model": variant or meta.get("model"),
            "model_config": None if variant else meta.get("model_config"), "step": meta.get("step")}
    return _tag(encoder, model, info)


def _tag(encoder: nn.Module, model: nn.Module, info: dict) -> nn.Module:
    if info.get("model_config") is None and hasattr(model, "config"):
        from specaware.config import to_dict
        info = {**info, "model_config": to_dict(model.config)}
    encoder.specaware_source = info
    return encoder


def _read_checkpoint(path: Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if path.is_dir():
        return _read_deepspeed(path, map_location)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(f"{path}: pickle-based checkpoints are not loaded (they can run "
                              "code). Convert it with `specaware export` to .safetensors + .json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (expected OUT.safetensors with "
                              "OUT.json beside it, or a DeepSpeed checkpoint folder)")
    from safetensors.torch import load_file
    state = load_file(str(path), device=str(map_location))
    return state, _read_meta(path.with_suffix(".json"))


def _read_meta(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise CheckpointError(f"{json_path} is missing: an export is OUT.safetensors plus OUT.json "
                              "(model name and config). Re-export with `specaware export`, or "
                              "pass variant=NAME to build a registered variant")
    meta = json.loads(json_path.read_text())
    fmt = meta.get("format")
    if fmt is not None and not str(fmt).startswith("specaware-export/"):
        raise CheckpointError(f"{json_path}: format {fmt!r} is not {EXPORT_FORMAT!r}")
    return meta


def _read_deepspeed(path: Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Consolidated fp32 weights of a checkpoint folder (a run folder picks its newest complete
    checkpoint). DeepSpeed files are pickles of our own trainer: point this only at folders you
    produced; share the `.safetensors` export with others."""
    try:
        from specaware.training import checkpoint as ckpt
        from specaware.training.export import consolidate
    except ImportError as e:
        raise CheckpointError(f"{path} is a folder, read as a DeepSpeed checkpoint, but "
                              f"specaware.training is unavailable ({e})") from e
    try:
        path = Path(ckpt.resolve_resume(str(path), path))
        info = ckpt.read_state(path)
    except (FileNotFoundError, OSError) as e:
        raise CheckpointError(f"{path}: not a checkpoint folder written by `specaware pretrain` "
                              f"({e})") from e
    result = consolidate(path)
    state, meta = result if isinstance(result, tuple) else (result, {})
    meta = {"model": info.get("model"), "model_config": info.get("model_config"),
            "step": info.get("step"), **(meta or {})}
    return {k: v.to(map_location) for k, v in state.items()}, meta


def _encoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder keys without their prefix; a file of bare encoder keys is accepted as is."""
    if any(k.startswith(ENCODER_PREFIX) for k in state):
        n = len(ENCODER_PREFIX)
        return {k[n:]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    return dict(state)


def _match_scalars(given: dict, wanted: dict) -> dict:
    """Training promotes 0-dim parameters to [1] for DeepSpeed; give them the model's shape."""
    out = dict(given)
    for k, ref in wanted.items():
        got = out.get(k)
        if got is not None and got.shape != ref.shape and got.numel() == ref.numel() == 1:
            out[k] = got.reshape(ref.shape)
    return out


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

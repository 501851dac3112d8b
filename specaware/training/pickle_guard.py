"""Reading DeepSpeed's `torch.save` pickles without running code from them.

DeepSpeed stores a checkpoint's model and optimizer states as pickles. Unpickling a crafted file
runs whatever it names, so `specaware export` first reads every `*.pt` file of a checkpoint with
torch's restricted unpickler (`torch.load(weights_only=True)`), which builds only tensors,
containers and the types listed here: the ones DeepSpeed itself writes. A file naming any other
type is refused with an error naming the type and the file; `--trust-pickle` is the explicit
opt-out for a checkpoint whose origin the user vouches for. Only after every file passed does
DeepSpeed's own consolidation (which unpickles without restriction) read them.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

__all__ = ["ALLOWED", "UnsafePickleError", "check_file", "check_folder", "safe_load"]

# "module.Name" of every non-builtin type found in checkpoints of `specaware pretrain` (ZeRO
# 0-3, fp32/bf16/fp16): torch.load's weights-only unpickler already accepts tensors, torch.Size,
# OrderedDict, dict/list/tuple/set and plain scalars.
ALLOWED = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


class UnsafePickleError(ValueError):
    """A checkpoint file that names a type outside the allow-list (or is no pickle at all)."""


def _resolve(name: str) -> Any | None:
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None     # this DeepSpeed version lacks it: then its files cannot name it either


def _allowed_objects() -> list[Any]:
    return [obj for obj in map(_resolve, ALLOWED) if isinstance(obj, type)]


def safe_load(path: str | Path) -> Any:
    """`torch.load` of `path` on the CPU with the restricted unpickler and the allow-list;
    UnsafePickleError naming the file and the offending type otherwise."""
    path = Path(path)
    try:
        unknown = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
                   if g not in ALLOWED]
    except Exception as e:  # noqa: BLE001 - not a torch zip archive at all
        raise UnsafePickleError(f"{path}: not a readable torch checkpoint file ({type(e).__name__}:"
                                f" {str(e).splitlines()[0] if str(e) else ''}); the checkpoint is "
                                "damaged: use another step_* folder or re-run") from None
    if unknown:
        raise UnsafePickleError(
            f"{path}: refusing to unpickle type(s) {', '.join(sorted(unknown))}, which "
            f"DeepSpeed never writes (a crafted file could run code when loaded). If you trust "
            f"this checkpoint's origin, pass --trust-pickle")
    try:
        with torch.serialization.safe_globals(_allowed_objects()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the restricted unpickler refused or the file broke
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UnsafePickleError(f"{path}: the restricted unpickler refused it ({type(e).__name__}"
                                f": {first}); if you trust this checkpoint's origin, pass "
                                "--trust-pickle") from None


def check_file(path: str | Path) -> None:
    """Raise UnsafePickleError unless `path` loads with the restricted unpickler."""
    safe_load(path)


def check_folder(folder: str | Path) -> list[Path]:
    """Check every `*.pt` file below `folder`; returns them (sorted). Raises on the first bad
    one, before anything else unpickles any of them."""
    files = sorted(Path(folder).rglob("*.pt"))
    for f in files:
        check_file(f)
    return files

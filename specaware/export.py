"""The export format: a pretrained model as `OUT.safetensors` + `OUT.json`, written and read here
only (docs/DESIGN.md section 4, "Export format"; docs/INTERFACES.md "Export format").

Format `specaware-export/1` (FORMAT): OUT.safetensors holds the fp32 state dict of the whole
MaskedAutoencoder; OUT.json beside it holds format, model name, model config, step, the
training config and the checkpoint it came from. `export` writes it from a pretraining
checkpoint (`specaware export`, and `hub.export_hub` for checkpoint folders); `read_export`
and `read_meta` read it for `load_pretrained` and the hub. Nothing here imports
specaware.training at module level: fine-tuning reads exports without the trainer. Only `export`
calls into training/, for the checkpoint layout and training/consolidate.py (DeepSpeed stays
inside training/).

Every ZeRO stage is consolidated (training/consolidate.py), and the weights are verified by a
strict load into a model built from the checkpoint's config before anything is written.

Trust: the DeepSpeed files are `torch.save` pickles. Every one is first read with torch's
restricted unpickler and an allow-list of the types DeepSpeed writes (pickle_guard.py); a file
naming anything else is refused with the type and the file, unless `--trust-pickle` is given.
Only then does DeepSpeed's consolidation read them. Share the exported .safetensors, which
cannot carry code.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "FORMAT", "export", "match_scalars", "read_export",
           "read_json_object", "read_meta", "read_safetensors", "read_safetensors_header",
           "write_export"]

FORMAT = "specaware-export/1"


def _verify(state: dict[str, torch.Tensor], model_config: dict) -> None:
    """Strict load into a freshly built model; fixes [1] <-> [] shapes in `state` in place
    (training promotes 0-dim parameters for DeepSpeed, see distributed.promote_scalar_params)."""
    from specaware.model.variants import create_model_from_config
    model = create_model_from_config(model_config)
    state.update(match_scalars(state, model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"exported weights do not match the model config: missing "
                           f"{missing[:8]}, unexpected {unexpected[:8]} (of {len(missing)} / "
                           f"{len(unexpected)}); was the checkpoint written by another version?")


def match_scalars(given: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """Training promotes 0-dim parameters to [1] for DeepSpeed (distributed.promote_scalar_params);
    give such tensors of `given` the shape they have in `wanted` (a model's state dict)."""
    out = dict(given)
    for k, ref in wanted.items():
        got = out.get(k)
        if got is not None and got.shape != ref.shape and got.numel() == ref.numel() == 1:
            out[k] = got.reshape(ref.shape)
    return out


def write_export(state: dict[str, torch.Tensor], out: str | Path, meta: dict[str, Any]
                 ) -> tuple[Path, Path]:
    """OUT.safetensors (the tensors, fp32 as given) and OUT.json (`meta` plus the format)."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"export: output must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (tied weights): give each its own copy
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(out),
              metadata={"format": FORMAT, "step": str(meta.get("step"))})
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps({"format": FORMAT, **meta}, indent=1))
    return out, meta_path


def export(ckpt: str | Path, out: str | Path, verify: bool = True,
           trust_pickle: bool = False) -> tuple[Path, Path]:
    """Write OUT.safetensors + OUT.json from checkpoint (or run folder) `ckpt`; `trust_pickle`
    skips the allow-list check of the DeepSpeed pickles (see the module docstring)."""
    from specaware.training import checkpoint
    from specaware.training.consolidate import consolidate

    path = checkpoint.resolve_resume(str(ckpt), ckpt, flag="export")
    state_info = checkpoint.read_state(path)
    state = consolidate(path, trust_pickle, state_info.get("fp32_master_names"))
    if verify and state_info.get("model_config"):
        _verify(state, state_info["model_config"])
    meta = {"model": state_info.get("model"), "model_config": state_info.get("model_config", {}),
            "step": int(state_info["step"]), "train_config": state_info.get("config", {}),
            "checkpoint": str(path)}
    out, meta_path = write_export(state, out, meta)
    log.info("exported %s (step %d, %d tensors) -> %s", path, meta["step"], len(state), out)
    return out, meta_path


# --- reading ---------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file, the keys and the fix."""


def read_export(path: str | Path, map_location="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta) of an export given as OUT.safetensors or OUT.json. Pickle files and
    DeepSpeed folders are refused (they can run code): `specaware export` turns them into one."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder (a DeepSpeed checkpoint or run folder); its .pt files are "
            "pickles, which can run code, so they are never loaded for use. Export it first: "
            f"`specaware export {path} OUT.safetensors`, then load OUT.safetensors")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(f"{path}: pickle-based checkpoints are not loaded (they can run "
                              "code). Convert it with `specaware export` to .safetensors + .json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (expected OUT.safetensors with "
                              "OUT.json beside it, as written by `specaware export`)")
    meta = read_meta(path.with_suffix(".json"))
    return read_safetensors(path, map_location), meta


def read_safetensors(path: Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything that is not one (truncated, random bytes, a
    renamed pickle, a crafted header) is a one-line CheckpointError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)}); it "
                              "is damaged or not a specaware export: re-export it with "
                              "`specaware export` or copy it again") from None


def read_safetensors_header(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, checking its header and that every tensor lies
    inside the file; a damaged file is one CheckpointError line naming it."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)}); it "
                              "is damaged or not a specaware checkpoint: write it again or copy "
                              "it again") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def read_json_object(json_path: Path, missing: str, remedy: str) -> dict[str, Any]:
    """The JSON object in `json_path` (the metadata half of an export or a fine-tuned
    checkpoint). A missing file, bad JSON or a non-object is one CheckpointError line naming
    the file: "`json_path` `missing`", or the defect followed by `remedy`."""
    if not json_path.is_file():
        raise CheckpointError(f"{json_path} {missing}")
    try:
        meta = json.loads(json_path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{json_path}: not valid JSON ({_first_line(e)}); {remedy}") \
            from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{json_path}: expected a JSON object, got {type(meta).__name__}; "
                              f"{remedy}")
    return meta


def read_meta(json_path: Path) -> dict[str, Any]:
    """The OUT.json of an export, checked to be a JSON object of this format family."""
    meta = read_json_object(
        json_path, "is missing: an export is OUT.safetensors plus OUT.json (model name and "
        "config). Re-export with `specaware export`, or pass variant=NAME to build a registered "
        "variant", "re-export with `specaware export`")
    fmt = meta.get("format")
    if fmt is not None and not str(fmt).startswith("specaware-export/"):
        raise CheckpointError(f"{json_path}: format {fmt!r} is not {FORMAT!r}")
    return meta

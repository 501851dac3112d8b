"""Consolidated fp32 weights + JSON config from a checkpoint (`specaware export`).

Works for checkpoints of every ZeRO stage: stages 1-3 (and bf16) are consolidated from the
fp32 master copies in the partitioned optimizer states (DeepSpeed's zero_to_fp32); stage 0
reads the module state, except in bf16, where the module holds bf16 weights and the fp32
masters sit in the optimizer's state (named by the trainer, `fp32_master_names`). Output (the format `specaware.load_pretrained` reads,
docs/INTERFACES.md): OUT.safetensors (fp32 state dict of the whole MaskedAutoencoder) and
OUT.json beside it with format, model name, model config, step and the training config.

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

import torch

from specaware.training import checkpoint, expert_parallel, pickle_guard

log = logging.getLogger(__name__)

__all__ = ["consolidate", "export", "FORMAT"]

FORMAT = "specaware-export/1"


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def consolidate(ckpt: Path, trust_pickle: bool = False,
                master_names: list[list[str]] | None = None) -> dict[str, torch.Tensor]:
    """fp32 state dict of the model in checkpoint folder `ckpt`, on CPU: the single-process
    model, with the experts of every expert-parallel rank when they were split. Unless
    `trust_pickle`, every DeepSpeed file must pass pickle_guard first (UnsafePickleError
    otherwise). `master_names`: the trainer state's `fp32_master_names` (bf16 at ZeRO 0)."""
    ds_dir = ckpt / checkpoint.DS_TAG
    if not trust_pickle:
        pickle_guard.check_folder(ds_dir)
    experts = expert_parallel.consolidate(ckpt)      # None unless deepspeed.expert_parallel > 1
    if experts is not None:
        state = {**expert_parallel.dense_from_zero(ds_dir, set(experts)), **experts}
    elif list(ds_dir.glob("bf16_zero_pp_rank_*_optim_states.pt")):
        state = _bf16_optimizer_state(ds_dir, trust_pickle)
    elif list(ds_dir.glob("*zero_pp_rank_*_optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=checkpoint.DS_TAG)
    else:
        files = sorted(ds_dir.glob("mp_rank_*_model_states.pt"))
        if not files:
            raise FileNotFoundError(f"{ds_dir}: no DeepSpeed model states; is this a "
                                    "checkpoint folder written by `specaware pretrain`?")
        saved = _load(files[0], trust_pickle)
        state = _with_masters(_strip_prefix(dict(saved["module"])), saved.get("optimizer"),
                              master_names, files[0])
    return {k: v.detach().float() if v.is_floating_point() else v.detach()
            for k, v in _strip_prefix(dict(state)).items()}


def _load(path: Path, trust_pickle: bool):
    """One DeepSpeed pickle: restricted unpickler unless the user vouched for the checkpoint."""
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    return pickle_guard.safe_load(path)


def _bf16_optimizer_state(ds_dir: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """State dict with fp32 masters from DeepSpeed's BF16_Optimizer files (bf16 with fp32
    gradient accumulation at ZeRO 1), which zero_to_fp32 does not read: each rank holds one
    contiguous slice of every parameter group's flat fp32 buffer (padding at the very end), and
    the model states list the group's parameters in buffer order (`param_shapes`)."""
    def rank(path: Path) -> int:
        return int(path.name.split("_pp_rank_")[1].split("_")[0])

    files = sorted(ds_dir.glob("bf16_zero_pp_rank_*_optim_states.pt"), key=rank)
    saved = _load(sorted(ds_dir.glob("mp_rank_*_model_states.pt"))[0], trust_pickle)
    parts = [_load(f, trust_pickle)["optimizer_state_dict"]["single_partition_of_fp32_groups"]
             for f in files]
    state = _strip_prefix(dict(saved["module"]))
    for g, shapes in enumerate(saved["param_shapes"]):
        flat = torch.cat([p[g] for p in parts])
        sizes = [int(torch.Size(shape).numel()) for shape in shapes.values()]
        if sum(sizes) > flat.numel():
            raise RuntimeError(f"{ds_dir}: parameter group {g} holds {flat.numel()} fp32 values "
                               f"for {sum(sizes)} weights; a rank's optimizer file is missing")
        for (name, shape), piece in zip(shapes.items(), flat[:sum(sizes)].split(sizes)):
            state[name.removeprefix("module.")] = piece.reshape(shape)
    return state


def _with_masters(state: dict, optimizer: dict | None, names: list[list[str]] | None,
                  source: Path) -> dict:
    """`state` with its low-precision weights replaced by the optimizer's fp32 masters, where
    the ZeRO-0 optimizer kept them (bf16); unchanged otherwise."""
    groups = (optimizer or {}).get("fp32_groups") if isinstance(optimizer, dict) else None
    low = [k for k, v in state.items() if v.is_floating_point() and v.dtype != torch.float32]
    if not groups or not low:
        return state
    if names is None:
        log.warning("%s: bf16 weights and fp32 masters without names (a checkpoint older than "
                    "the trainer's fp32_master_names); exporting the bf16 weights", source)
        return state
    if [len(g) for g in names] != [len(g) for g in groups]:
        raise RuntimeError(f"{source}: the fp32 master groups ({[len(g) for g in groups]}) do "
                           f"not match the names the trainer saved ({[len(g) for g in names]})")
    out = dict(state)
    for group_names, group in zip(names, groups):
        for name, master in zip(group_names, group):
            if name not in state or state[name].numel() != master.numel():
                raise RuntimeError(f"{source}: fp32 master of {name!r} does not match the "
                                   f"module weight; the checkpoint is damaged")
            out[name] = master.reshape(state[name].shape)
    return out


def _verify(state: dict[str, torch.Tensor], model_config: dict) -> None:
    """Strict load into a freshly built model; fixes [1] <-> [] shapes in `state` in place
    (training promotes 0-dim parameters for DeepSpeed, see distributed.promote_scalar_params)."""
    from specaware.model.variants import create_model_from_config
    model = create_model_from_config(model_config)
    for name, ref in model.state_dict().items():
        got = state.get(name)
        if got is not None and got.shape != ref.shape and got.numel() == ref.numel() == 1:
            state[name] = got.reshape(ref.shape)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"exported weights do not match the model config: missing "
                           f"{missing[:8]}, unexpected {unexpected[:8]} (of {len(missing)} / "
                           f"{len(unexpected)}); was the checkpoint written by another version?")


def export(ckpt: str | Path, out: str | Path, verify: bool = True,
           trust_pickle: bool = False) -> tuple[Path, Path]:
    """Write OUT.safetensors + OUT.json from checkpoint (or run folder) `ckpt`; `trust_pickle`
    skips the allow-list check of the DeepSpeed pickles (see the module docstring)."""
    from safetensors.torch import save_file

    path = checkpoint.resolve_resume(str(ckpt), ckpt, flag="export")
    state_info = checkpoint.read_state(path)
    state = consolidate(path, trust_pickle, state_info.get("fp32_master_names"))
    if verify and state_info.get("model_config"):
        _verify(state, state_info["model_config"])
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"export: output must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (tied weights): give each its own copy
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(out),
              metadata={"format": FORMAT, "step": str(state_info["step"])})
    meta = {"format": FORMAT, "model": state_info.get("model"),
            "model_config": state_info.get("model_config", {}), "step": int(state_info["step"]),
            "train_config": state_info.get("config", {}), "checkpoint": str(path)}
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=1))
    log.info("exported %s (step %d, %d tensors) -> %s", path, meta["step"], len(state), out)
    return out, meta_path

"""Consolidated fp32 weights of a DeepSpeed checkpoint folder, for `specaware.export.export`.

Expert-parallel runs are gathered first (training/expert_parallel.py); otherwise stages 1-3
are consolidated from the fp32 master copies in the partitioned optimizer states (DeepSpeed's
zero_to_fp32), DeepSpeed's BF16_Optimizer files from their flat fp32 buffers, and stage 0
reads the module state, except in bf16, where the fp32 masters sit in the optimizer's state
(named by the trainer, `fp32_master_names`). Every DeepSpeed file passes pickle_guard first
unless the caller trusts the pickles (see specaware/export.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from specaware.training import checkpoint, expert_parallel, pickle_guard

log = logging.getLogger(__name__)

__all__ = ["consolidate"]


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

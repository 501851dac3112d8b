"""Expert parallelism in the trainer: `deepspeed.expert_parallel: N` (README "Scaling experts").

Every group of N consecutive ranks splits each Soft-MoE layer's experts N ways; slots travel
between them by all-to-all (moe/parallel.py). With W ranks, DeepSpeed's "E + D" groups
(deepspeed.utils.groups, the layout of its own MoE layers):

    expert-parallel group        [0..N-1], [N..2N-1], ...   one copy of all experts, all-to-all
    expert-data-parallel group   [r, r+N, r+2N, ...]        ranks holding the same experts
    data-parallel group          all W ranks                every dense weight, as with N = 1

Gradients. An expert weight's local gradient already sums the contributions of every rank of
its expert-parallel group (the backward all-to-all brings them home). DeepSpeed divides it by W
and sums it over the expert-data-parallel group, which is exactly the gradient of the mean loss
over all W ranks: N = 1 and N > 1 train the same model. For that DeepSpeed must know the expert
weights: each is tagged `allreduce = False` and `group_name = "ep_size_N"` (the attributes its
`deepspeed.moe.utils.is_moe_param` reads), and they sit in optimizer groups marked
`moe: True, name: "ep_size_N"`, which ZeRO-1/2 partition and reduce over the
expert-data-parallel group and whose gradient norm they add over all experts before clipping.
distributed.py tells the engine that these tags are experts (its own detection looks only for
its top-k `deepspeed.moe.layer.MoE`).

Checkpoints. DeepSpeed keeps each rank's fp32 expert masters in that rank's ZeRO file, but the
module file it writes is rank 0's, and on load it gives every rank rank 0's experts until the
next optimizer step. So each expert-parallel rank also writes its experts (fp32 masters) to
`experts/ep_rank_RRRRR.safetensors`; `load` puts them back into the module after DeepSpeed's
load, and `consolidate` concatenates the files of all ranks into the single-process weights.

ZeRO-3 is refused: it partitions every weight over all W ranks, and DeepSpeed's expert-aware
ZeRO-3 placement exists only for its own (AutoEP) layers. ZeRO-0 is refused: its gradient
clipping averages the per-rank norms, which differ once ranks hold different experts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from torch import nn

from specaware.config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["group_name", "check_config", "check_world", "check_ds_config", "expert_layers",
           "shard_model", "split_param_groups", "param_stats", "check_resume", "save_experts",
           "load_experts", "consolidate", "dense_from_zero", "EXPERTS_DIR", "FORMAT"]

EXPERTS_DIR = "experts"
FORMAT = "specaware-experts/1"
_KEY = "deepspeed.expert_parallel"


def group_name(n: int) -> str:
    """DeepSpeed's name of the expert groups of size n (deepspeed.utils.groups)."""
    return f"ep_size_{n}"


def expert_layers(model: nn.Module) -> dict[str, int]:
    """{module name: number of experts} of every (single-process) Soft-MoE layer in `model`."""
    from moe import SoftMoE
    return {name: m.num_experts for name, m in model.named_modules() if isinstance(m, SoftMoE)}


def check_config(n: int, zero_stage: int, model_factory) -> None:
    """Refuse what expert parallelism cannot do, before any process starts (ConfigError)."""
    if n < 1:
        raise ConfigError(f"config key '{_KEY}': must be >= 1 (1 = every rank holds every "
                          f"expert), got {n}")
    if n == 1:
        return
    if zero_stage not in (1, 2):
        why = ("ZeRO-3 partitions every weight over all ranks, and DeepSpeed's expert-aware "
               "ZeRO-3 placement serves only its own top-k layers" if zero_stage == 3 else
               "ZeRO-0 clips gradients by the mean of per-rank norms, which differ once ranks "
               "hold different experts")
        raise ConfigError(f"config key '{_KEY}': {n} needs deepspeed.zero_stage 1 or 2, got "
                          f"{zero_stage}: {why}. Set deepspeed.zero_stage=1 (or 2)")
    with torch.device("meta"):              # shapes only: no memory, no init cost
        layers = expert_layers(model_factory())
    if not layers:
        raise ConfigError(f"config key '{_KEY}': {n}, but the model has no Soft-MoE layer to "
                          f"split; set {_KEY}=1 or choose a model with Soft-MoE blocks")
    bad = {name: e for name, e in layers.items() if e % n}
    if bad:
        shown = ", ".join(f"{name} has {e}" for name, e in list(bad.items())[:4])
        raise ConfigError(f"config key '{_KEY}': {n} must divide every Soft-MoE layer's expert "
                          f"count ({shown}); change {_KEY} or the model's expert counts "
                          f"(model.overrides moe.num_experts / decoder.moe_num_experts)")


def check_world(n: int, world_size: int) -> None:
    if world_size % n:
        raise ConfigError(f"config key '{_KEY}': {n} must divide the number of processes "
                          f"({world_size}); launch a multiple of {n} processes or change it")


def check_ds_config(n: int, ds_config: dict) -> None:
    """DeepSpeed's ZeRO reduces expert gradients over their own group only with reduce-scatter
    (it asserts so deep inside); a preset that turns it off is refused here, naming the key."""
    if n > 1 and ds_config.get("zero_optimization", {}).get("reduce_scatter") is False:
        raise ConfigError(f"config key '{_KEY}': {n} needs DeepSpeed's zero_optimization."
                          f"reduce_scatter (expert gradients are reduced over their own group "
                          f"with it); remove 'reduce_scatter: false' from deepspeed.preset")


def shard_model(model: nn.Module, n: int, group) -> list[str]:
    """Replace every Soft-MoE layer by this rank's share (experts split over `group`, the
    expert-parallel group of size n) and tag the expert weights for DeepSpeed; returns their
    names. Every rank must hold identical weights when this is called."""
    from moe.parallel import expert_parallelize, expert_parameters
    expert_parallelize(model, group)
    names = []
    for name, param in expert_parameters(model):
        param.allreduce = False             # deepspeed.moe.utils.is_moe_param
        param.group_name = group_name(n)
        names.append(name)
    return names


def param_stats(model: nn.Module) -> dict[str, int]:
    """Parameters held by this rank: counts and bytes, all and Soft-MoE expert banks only
    (split or not)."""
    from moe import SoftMoE
    params = list(model.parameters())
    experts = [p for m in model.modules() if isinstance(m, SoftMoE) for p in m.experts.parameters()]
    return {"params": sum(p.numel() for p in params),
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "expert_params": sum(p.numel() for p in experts),
            "expert_param_bytes": sum(p.numel() * p.element_size() for p in experts)}


def _is_expert(param: nn.Parameter) -> bool:
    return getattr(param, "allreduce", True) is False


def split_param_groups(groups: list[dict]) -> list[dict]:
    """Each optimizer group split into its dense part and its expert part (same hyper-
    parameters, plus `moe: True` and the expert group's `name`, as DeepSpeed's ZeRO expects);
    groups left empty are dropped. Groups carry `names` (optim.param_groups) or not."""
    out = []
    for group in groups:
        names = group.get("names", [None] * len(group["params"]))
        for expert in (False, True):
            picked = [(n, p) for n, p in zip(names, group["params"]) if _is_expert(p) == expert]
            if not picked:
                continue
            part = {**group, "params": [p for _, p in picked]}
            if "names" in group:
                part["names"] = [n for n, _ in picked]
            if expert:
                part.update(moe=True, name=picked[0][1].group_name)
            out.append(part)
    return out


# --- checkpoints -----------------------------------------------------------------------------

def check_resume(state: dict, n: int, ckpt) -> None:
    """A checkpoint resumes only with the expert split it was written with (its module and
    optimizer files hold e/N experts per layer); ConfigError naming both settings otherwise."""
    saved = int(state.get("config", {}).get("deepspeed", {}).get("expert_parallel", 1))
    if saved != n:
        raise ConfigError(f"config key '{_KEY}': checkpoint {ckpt} was written with {_KEY}="
                          f"{saved}, this run has {n}; resume with {_KEY}={saved}, or "
                          f"`specaware export` it and start a new run from the export")


def _file(ckpt: Path, ep_rank: int) -> Path:
    return Path(ckpt) / EXPERTS_DIR / f"ep_rank_{ep_rank:05d}.safetensors"


def _expert_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in module.named_parameters() if _is_expert(p)]


def _layout(module: nn.Module) -> dict[str, dict]:
    """{layer name: {num_experts, local_experts, first}} of this rank's expert-parallel layers."""
    from moe.parallel import ExpertParallelSoftMoE
    return {name: {"num_experts": m.num_experts, "local_experts": m.local_experts,
                   "first": m.rank * m.local_experts}
            for name, m in module.named_modules() if isinstance(m, ExpertParallelSoftMoE)}


def save_experts(module: nn.Module, ckpt: Path) -> Path | None:
    """Write this rank's experts (fp32 masters) into checkpoint folder `ckpt`. Call on every
    rank (the fp32 masters are gathered over the expert-data-parallel group); the first rank
    of each expert-data-parallel group writes. No-op for a model without expert weights."""
    params = _expert_params(module)
    if not params:
        return None
    from deepspeed.utils import groups, safe_get_full_fp32_param
    name = params[0][1].group_name
    tensors = {}
    for key, param in params:
        full = safe_get_full_fp32_param(param)
        tensors[key] = (param.detach() if full is None else full).float().cpu().contiguous()
    if groups._get_expert_data_parallel_rank(name) != 0:
        return None
    ep_rank = groups._get_expert_parallel_rank(name)
    meta = {"format": FORMAT, "expert_parallel": groups._get_expert_parallel_world_size(name),
            "ep_rank": ep_rank, "layers": _layout(module)}
    from safetensors.torch import save_file
    path = _file(ckpt, ep_rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"specaware": json.dumps(meta)})
    return path


def load_experts(module: nn.Module, ckpt: Path) -> int:
    """Put this rank's experts from checkpoint `ckpt` into the module weights and DeepSpeed's
    fp32 masters (after `engine.load_checkpoint`, which leaves rank 0's experts in every
    module). Call on every rank; returns the number of tensors restored."""
    params = _expert_params(module)
    if not params:
        return 0
    from deepspeed.utils import groups, safe_set_full_fp32_param
    from safetensors.torch import load_file
    name = params[0][1].group_name
    ep_rank = groups._get_expert_parallel_rank(name)
    n = groups._get_expert_parallel_world_size(name)
    path = _file(ckpt, ep_rank)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: checkpoint {ckpt} was not written with "
                                f"{_KEY}={n}; resume with the setting it was trained with")
    saved = load_file(str(path))
    meta = json.loads(_metadata(path)["specaware"])
    if meta["expert_parallel"] != n or sorted(saved) != sorted(k for k, _ in params):
        raise RuntimeError(f"{path}: experts of {_KEY}={meta['expert_parallel']} "
                           f"({len(saved)} tensors) cannot be resumed with {_KEY}={n} "
                           f"({len(params)} tensors); resume with the setting it was trained with")
    with torch.no_grad():
        for key, param in params:
            value = saved[key].to(param.device)
            param.copy_(value.to(param.dtype))
            safe_set_full_fp32_param(param, value)
    return len(params)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def consolidate(ckpt: Path) -> dict[str, torch.Tensor] | None:
    """{name: full fp32 tensor} of every expert weight, concatenated over the expert-parallel
    ranks' files of checkpoint `ckpt` in expert order; None when the checkpoint has none.
    Names are those of the single-process model (expert axis first)."""
    folder = Path(ckpt) / EXPERTS_DIR
    files = sorted(folder.glob("ep_rank_*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    from safetensors.torch import load_file
    ranked = sorted((json.loads(_metadata(f)["specaware"])["ep_rank"], f) for f in files)
    n = json.loads(_metadata(files[0])["specaware"])["expert_parallel"]
    if [r for r, _ in ranked] != list(range(n)):
        raise FileNotFoundError(f"{folder}: expected the experts of {n} expert-parallel ranks "
                                f"(ep_rank_00000..{n - 1:05d}), found {[f.name for f in files]}; "
                                "the checkpoint is incomplete")
    parts = [load_file(str(f)) for _, f in ranked]
    return {key: torch.cat([p[key] for p in parts], dim=0) for key in parts[0]}


def dense_from_zero(ds_dir: Path, expert_names: set[str]) -> dict[str, torch.Tensor]:
    """fp32 dense weights and buffers from the ZeRO-1/2 files in `ds_dir`, expert groups left
    out. DeepSpeed's zero_to_fp32 merges every optimizer group as if it were partitioned over
    all ranks; the expert groups are partitioned over the expert-data-parallel group instead
    (their weights come from `consolidate`), so they are removed before its merge."""
    from deepspeed.utils import zero_to_fp32 as z
    states = z.parse_model_states(z.get_model_state_files(str(ds_dir)))
    stage, world, flat, paddings = z.parse_optim_states(z.get_optim_files(str(ds_dir)),
                                                        str(ds_dir))
    if stage > 2:
        raise RuntimeError(f"{ds_dir}: ZeRO-{stage} checkpoint with split experts; "
                           f"{_KEY} > 1 trains with ZeRO 1 or 2 only")
    keep = [i for i, shapes in enumerate(states[0].param_shapes)
            if not expert_names & set(shapes)]
    states = [dataclasses.replace(s, param_shapes=[s.param_shapes[i] for i in keep])
              for s in states]
    flat = [[groups[i] for i in keep] for groups in flat]
    paddings = None if paddings is None else [paddings[i] for i in keep]
    return z._get_fp32_state_dict_from_zero2_checkpoint(world, flat, states, False, paddings)

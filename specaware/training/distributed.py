"""Process-group set-up and `deepspeed.initialize`: the only module that touches either.

Launchers this understands (docs/DESIGN.md section 4):
- torchrun / torch.distributed.run, and the `deepspeed` launcher: RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT are in the environment (the deepspeed launcher may also pass
  `--local_rank`, which the CLI accepts and hands to `detect`);
- Slurm `srun`: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, the master is the first host of
  SLURM_JOB_NODELIST (or SLURM_NODELIST), the port derives from the job id;
- a plain single process: rank 0 of 1 on 127.0.0.1 and a free port.
In every case the standard variables are written to the environment before DeepSpeed starts,
so it never falls back to MPI discovery (which would import mpi4py).
Backend: nccl on GPU, gloo on CPU (the tests run on CPU with gloo).
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import socket
import sys
import typing
from typing import Mapping, MutableMapping

import torch

log = logging.getLogger(__name__)

__all__ = ["DistEnv", "detect", "parse_nodelist", "setup", "initialize", "shutdown",
           "any_true", "mean_of", "barrier", "broadcast_object"]


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str            # "torchrun" (also the deepspeed launcher), "slurm" or "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_nodelist(nodelist: str) -> list[str]:
    """Expand a Slurm host list: 'gpu[01-03,7],login-2' -> ['gpu01', 'gpu02', 'gpu03', 'gpu7',
    'login-2']. Zero padding of ranges is kept; nested brackets do not occur in Slurm."""
    hosts: list[str] = []
    for prefix, body, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain.strip())
            continue
        for part in body.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                width = len(lo)
                hosts += [f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1)]
            else:
                hosts.append(prefix + part)
    return [h for h in hosts if h]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _int(environ: Mapping[str, str], key: str) -> int:
    try:
        return int(environ[key])
    except ValueError:
        raise RuntimeError(f"environment variable {key}={environ[key]!r} is not an integer; "
                           "check the launcher command") from None


def detect(environ: Mapping[str, str] | None = None, local_rank: int | None = None) -> DistEnv:
    """Work out rank, world size and rendezvous address from the launcher's environment."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        lr = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else (local_rank or 0)
        return DistEnv(_int(env, "RANK"), _int(env, "WORLD_SIZE"), lr,
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)),
                       "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        hosts = parse_nodelist(nodelist)
        addr = env.get("MASTER_ADDR") or (hosts[0] if hosts else "127.0.0.1")
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        port = int(env.get("MASTER_PORT") or 15000 + job % 20000)
        return DistEnv(_int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"),
                       _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
                       addr, port, "slurm")
    return DistEnv(0, 1, local_rank or 0, "127.0.0.1", _free_port(), "single")


def export(env: DistEnv, environ: MutableMapping[str, str] | None = None) -> None:
    """Write the standard variables so DeepSpeed's env:// rendezvous finds them."""
    target = os.environ if environ is None else environ
    target.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size),
                  LOCAL_RANK=str(env.local_rank), MASTER_ADDR=env.master_addr,
                  MASTER_PORT=str(env.master_port))


def _backend(choice: str) -> str:
    if choice != "auto":
        return choice
    return "nccl" if torch.cuda.is_available() else "gloo"


def setup(backend: str = "auto", local_rank: int | None = None,
          timeout_min: float = 30.0) -> tuple[DistEnv, torch.device]:
    """Detect the launcher, export the rank variables, start the process group.

    Returns the environment and the device this process computes on (cuda:LOCAL_RANK, or cpu).
    """
    import deepspeed

    env = detect(local_rank=local_rank)
    export(env)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    else:
        device = torch.device("cpu")
    name = _backend(backend)
    if name == "nccl" and device.type != "cuda":
        raise RuntimeError("deepspeed.backend=nccl needs GPUs; none is visible. "
                           "Use deepspeed.backend=gloo (or auto) on CPU machines.")
    deepspeed.init_distributed(dist_backend=name, auto_mpi_discovery=False,
                               timeout=datetime.timedelta(minutes=timeout_min),
                               rank=env.rank, world_size=env.world_size)
    log.info("rank %d/%d (local %d) via %s, backend %s, device %s", env.rank, env.world_size,
             env.local_rank, env.launcher, name, device)
    return env, device


def promote_scalar_params(model: torch.nn.Module) -> list[str]:
    """Give 0-dim parameters shape [1] in place; returns their names.

    DeepSpeed 0.19.8 broadcasts every parameter as `p.data.view(torch.uint8)` at start-up,
    which raises for 0-dim tensors (e.g. a router's learnable scale). A [1] tensor broadcasts
    the same way in the model's arithmetic; `export` gives the original shapes back.
    """
    names = []
    for name, p in model.named_parameters():
        if p.ndim == 0:
            p.data = p.data.reshape(1)
            names.append(name)
    if names:
        log.debug("0-dim parameters promoted to shape [1] for DeepSpeed: %s", names)
    return names


def _returns_dataclass(module: torch.nn.Module) -> bool:
    try:
        ret = typing.get_type_hints(type(module).forward).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: assume tensors
        return False
    return isinstance(ret, type) and dataclasses.is_dataclass(ret)


def register_zero3_external(model: torch.nn.Module) -> list[str]:
    """Let ZeRO-3 re-gather parameters of modules whose forward returns a dataclass.

    ZeRO-3 frees a module's parameters after its forward and gathers them again for backward
    from hooks on the module's output tensors, which it finds only inside tensors, tuples,
    lists and dicts. A module returning a dataclass (e.g. a router's weights) would run its
    backward on freed (empty) parameters. Registering its parameters as external parameters
    of the parent hands their gathering to the parent, whose output is traversable.
    Returns the names of the modules handled.
    """
    from deepspeed.runtime.zero import register_external_parameter

    handled = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if _returns_dataclass(child):
                for p in child.parameters():
                    register_external_parameter(parent, p)
                handled.append(f"{parent_name}.{child_name}".lstrip("."))
    return handled


def expert_parallel_group(n: int):
    """This rank's expert-parallel group of size n (DeepSpeed's "E + D" layout: ranks
    [k*n, (k+1)*n) share one copy of the experts; expert_parallel.py draws the picture).
    Creates DeepSpeed's expert and expert-data-parallel groups on first use (collective)."""
    from deepspeed.utils import groups

    name = f"ep_size_{n}"
    if name not in groups._get_expert_parallel_group_dict():
        groups._create_expert_and_data_parallel(n)
    return groups._get_expert_parallel_group(name)


def _has_expert_params(model: torch.nn.Module) -> bool:
    from deepspeed.moe.utils import is_moe_param
    return any(is_moe_param(p) for p in model.parameters())


def _expert_aware_engine(model, optimizer, lr_scheduler, ds_config: dict):
    """What `deepspeed.initialize` does for our case (plain module, no mpu/mesh), with an
    engine that recognises expert weights by their tags.

    DeepSpeed switches its expert paths on (`has_moe_layers`: ZeRO partitions and reduces the
    `moe` optimizer groups over the expert-data-parallel group and adds the expert gradient
    norms of all ranks before clipping; the bf16 optimizer reduces them the same way) only
    when it finds its own top-k `deepspeed.moe.layer.MoE` (or AutoEP) modules. Our Soft-MoE
    layers tag their weights with the attributes those paths read (`allreduce=False`,
    `group_name`), so the engine below turns the switch on from the tags instead.
    """
    import deepspeed
    from deepspeed import DeepSpeedConfig, set_optimizer_flags, zero
    from deepspeed.runtime.engine import DeepSpeedEngine

    class ExpertAwareEngine(DeepSpeedEngine):
        def _configure_distributed_model(self, model):
            super()._configure_distributed_model(model)   # broadcasts experts per group
            from moe.parallel import ExpertParallelSoftMoE
            self.has_moe_layers = True
            self.num_experts = [m.num_experts for m in self.module.modules()
                                if isinstance(m, ExpertParallelSoftMoE)]

    zero.partition_parameters.shutdown_init_context()
    config_class = DeepSpeedConfig(ds_config, None, mesh_device=None)
    set_optimizer_flags(config_class, model)
    engine = ExpertAwareEngine(args=None, model=model, optimizer=optimizer,
                               lr_scheduler=lr_scheduler, config=ds_config,
                               config_class=config_class)
    zero.partition_parameters.restore_init_context()
    engine._configure_python_gc()
    log.info("DeepSpeed %s engine with expert-parallel weights (%s experts per layer)",
             deepspeed.__version__, engine.num_experts)
    return engine, engine.lr_scheduler


def initialize(model, optimizer, lr_scheduler, ds_config: dict):
    """`deepspeed.initialize` on a finished model; returns (engine, lr_scheduler).

    Call `promote_scalar_params(model)` before building the optimizer (it holds the params).
    A model holding expert-parallel weights (expert_parallel.shard_model) gets an engine that
    reduces them over their expert-data-parallel group (`_expert_aware_engine`).
    """
    import deepspeed

    if _has_expert_params(model):
        engine, scheduler = _expert_aware_engine(model, optimizer, lr_scheduler, ds_config)
    else:
        engine, _, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, config=ds_config)
    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        handled = register_zero3_external(engine.module)
        if handled:
            log.info("ZeRO-3: parameters of %d dataclass-returning modules gathered by their "
                     "parents (%s...)", len(handled), handled[0])
    return engine, scheduler


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any rank (ranks must agree to skip a step)."""
    dist = _dist()
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist is not None:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_of(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean over ranks of a dict of floats; every rank must pass the same keys in any order."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s Python object on every rank (pickled in memory between our own ranks)."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    """Destroy the process group and DeepSpeed's caches of its sub-groups, so a later
    `setup` in the same process (a notebook, a test session, a sweep) starts clean."""
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()
    _forget_deepspeed_groups()


def _forget_deepspeed_groups() -> None:
    """DeepSpeed caches groups (a clone of the world group, data/expert-parallel groups) at
    module level; after the process group is gone they point at nothing and the next
    `deepspeed.initialize` fails with 'Group ... is not registered'."""
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is None:
        return
    for name, value in list(vars(groups).items()):
        if name.startswith("_") and name.endswith(("_GROUP", "_GROUP_RANKS")):
            setattr(groups, name, {} if isinstance(value, dict) else None)
    if hasattr(groups, "mesh_device"):
        groups.mesh_device = None

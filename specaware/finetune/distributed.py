"""Data-parallel fine-tuning: `torchrun --nproc_per_node N -m specaware.finetune ...`.

Why DDP and not DeepSpeed: a fine-tuned model is an encoder (at most `base`) plus a small head,
which fits every accelerator whole, so ZeRO's sharding buys nothing; DDP is torch's own, needs
no compiled ops, runs the plain loop of finetune/train.py unchanged and saves ordinary state
dicts (LoRA adapters, head) that need no consolidation. Backend: nccl when the process drives a
CUDA device, gloo on CPU (also what the tests use).

Exactness: validation and test samplers give every sample to exactly one rank (no padding
repeats), and ranks sum their confusion matrices, so metrics are those of one process over the
same data. Training samplers split one seeded permutation per epoch by rank; with a global
batch B each rank takes B / N, so one step of N ranks sees the samples that one process sees in
the same step, and the loss is normalised by the global count of labelled targets, so the
averaged gradient is the one-process gradient (up to float rounding).

Rank and world size come from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from specaware.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    """Where this process stands: rank of world_size, and the device it drives."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def resolve_device(device: str) -> torch.device:
    """`device` of the config; "auto" = cuda when CUDA is available, else cpu."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistEnv:
    """Join the process group torchrun describes (nothing to do for a single process).

    `device`: auto = cuda:LOCAL_RANK when CUDA is available, else cpu; an explicit "cpu" keeps
    a multi-GPU machine on gloo.
    """
    world, rank, local = (_env_int("WORLD_SIZE", 1), _env_int("RANK", 0),
                          _env_int("LOCAL_RANK", 0))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    env = DistEnv(rank, world, local, dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        log.info("rank %d of %d on %s (%s)", rank, world, dev, backend)
    return env


def shutdown(env: DistEnv) -> None:
    if env.active and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, env: DistEnv) -> nn.Module:
    """DDP around `model` when several processes run, else `model` itself. Unused trainable
    parameters are allowed: a segmentation head reads a few blocks' outputs, and the final
    norm of an encoder trained as a whole never enters its loss."""
    if not env.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [env.device.index] if env.device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def all_sum(values: torch.Tensor, env: DistEnv | None) -> torch.Tensor:
    """Element-wise sum over ranks (a copy; the input is untouched)."""
    out = values.clone()
    if env is not None and env.active:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_have_batch(has_batch: bool, env: DistEnv | None) -> bool:
    """True while every rank still has a batch this epoch. Ranks of an iterable (shard) loader
    can hold a few batches more than others; stopping together keeps DDP's collectives in step."""
    if env is None or not env.active:
        return has_batch
    flag = torch.tensor([1 if has_batch else 0], device=env.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def local_batch_size(global_batch: int, env: DistEnv) -> int:
    if global_batch % env.world_size:
        raise ConfigError(f"optim.batch_size={global_batch} is the global batch and must divide "
                         f"by the {env.world_size} processes: use a multiple of "
                         f"{env.world_size}, e.g. optim.batch_size="
                         f"{max(1, global_batch // env.world_size) * env.world_size}")
    return global_batch // env.world_size


class RankSampler(Sampler[int]):
    """The indices of one rank.

    train (shuffle=True): a permutation seeded by (seed, epoch), padded by wrapping around to a
    multiple of world_size so every rank takes as many steps, then every world_size-th index
    from `rank`. eval (shuffle=False): 0..n-1 split the same way without padding, so each sample
    is seen exactly once over all ranks. Call `set_epoch` before each training epoch.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 seed: int = 0):
        self.n, self.rank, self.world, self.shuffle, self.seed = n, rank, world_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        pad = (-self.n) % self.world
        return order + order[:pad] if self.n else order

    def __iter__(self):
        return iter(self._order()[self.rank::self.world])

    def __len__(self) -> int:
        total = self.n + ((-self.n) % self.world if self.shuffle else 0)
        return len(range(self.rank, total, self.world))

"""Expert-parallel Soft MoE (Puigcerver et al., ICLR 2024): the experts of a layer spread over the
ranks of a process group, slots exchanged with all-to-all (gloo, NCCL, any backend with it).

Every rank keeps its own batch and the whole router (replicated, like any data-parallel weight)
and holds e/w of the experts (w = group size). A call on rank r:

    routing = router(x, mask)                  local, unchanged from soft_moe.py
    slots   = dispatch^T x                     [b_r, m, d]
    send    slots of expert block j to rank j  all-to-all #1 (rows grouped by destination)
    rows    = slots from every rank            [e/w, sum_i b_i * s, d] -> local experts
    return  outputs to the ranks they came from all-to-all #2 (the reverse exchange)
    y       = combine outputs                  [b_r, n, d]

Both exchanges are autograd functions whose backward is the reverse all-to-all, so gradients
reach the remote tokens and the local experts exactly as in the single-process layer. Local batch
sizes may differ between ranks (one tiny all_gather of b per call sizes the exchange).

Gradient bookkeeping for the trainer (this layer does no reduction of its own):
- router and every non-expert weight: a replica per rank, all-reduce as usual (DDP/DeepSpeed);
- expert weights (marked `param.expert_parallel = True`, listed by `expert_parameters`): never
  broadcast or all-reduced inside the group (torch DDP:
  `DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`). Their gradient already
  sums the contributions of the losses of all w ranks of the group. Where the trainer averages
  the loss over W data-parallel ranks (W = w, or W = w * replicas of the group), sum it over the
  replicas of the same shard (if any) and divide by W to get the gradient of that average.

This is the only file of `moe` that imports torch.distributed; the process group comes from the
outside (the training module owns process groups).

Letters: b local batch, n tokens, d width, e experts, w ranks in the group, l = e/w local
experts, s slots per expert, m = e*s slots.
"""
from __future__ import annotations

from typing import Iterator, Union

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor, nn

from .experts import ExpertFactory, make_experts, shard_experts
from .soft_moe import SoftMoE


class _AllToAll(torch.autograd.Function):
    """Rows [sum(in_splits), ...] -> [sum(out_splits), ...]; chunk j of the input goes to rank j.
    Backward sends the gradient back the way the rows came (splits swapped)."""

    @staticmethod
    def forward(ctx, x: Tensor, out_splits: list[int], in_splits: list[int], group) -> Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        return _exchange(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        out_splits, in_splits = ctx.splits
        return _exchange(grad, in_splits, out_splits, ctx.group), None, None, None


def _exchange(x: Tensor, out_splits: list[int], in_splits: list[int], group) -> Tensor:
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    return out


def all_to_all(x: Tensor, out_splits: list[int], in_splits: list[int], group=None) -> Tensor:
    """Differentiable all-to-all along dim 0: send x[chunk j] (sizes in_splits) to rank j,
    receive out_splits[i] rows from rank i, concatenated in rank order."""
    return _AllToAll.apply(x, list(out_splits), list(in_splits), group)


def pack_slots(slots: Tensor, world: int, slots_per_expert: int) -> Tensor:
    """[b, m, d] -> rows [(w l b s), d]: chunk j holds the slots of rank j's experts."""
    return rearrange(slots, "b (w l s) d -> (w l b s) d", w=world, s=slots_per_expert)


def rows_per_expert(received: Tensor, batches: list[int], local_experts: int,
                    slots_per_expert: int) -> Tensor:
    """Received rows, chunk i [(l b_i s), d] from rank i -> [l, (sum_i b_i s), d] for the bank."""
    sizes = [b * slots_per_expert for b in batches]
    chunks = received.split([local_experts * n for n in sizes])
    return torch.cat([rearrange(c, "(l r) d -> l r d", l=local_experts) for c in chunks], dim=1)


def rows_to_sources(outputs: Tensor, batches: list[int], slots_per_expert: int) -> Tensor:
    """Inverse of `rows_per_expert`: [l, (sum_i b_i s), d] -> rows [(sum_i l b_i s), d]."""
    per_source = outputs.split([b * slots_per_expert for b in batches], dim=1)
    return torch.cat([rearrange(c, "l r d -> (l r) d") for c in per_source], dim=0)


def unpack_slots(rows: Tensor, world: int, batch: int, slots_per_expert: int) -> Tensor:
    """Inverse of `pack_slots`: rows [(w l b s), d] -> [b, m, d]."""
    return rearrange(rows, "(w l b s) d -> b (w l s) d", w=world, b=batch, s=slots_per_expert)


class ExpertParallelSoftMoE(SoftMoE):
    """SoftMoE whose experts live on the ranks of `group`; same call, same outputs.

    Args: as `SoftMoE`, plus `group` (a torch.distributed process group; None = the default
    world, which must be initialised). num_experts must be divisible by the group size; this
    rank holds experts [rank*l, (rank+1)*l) with l = num_experts / world.

    Initialisation: built under the same seed on every rank, each rank draws the whole bank as
    a single-process `SoftMoE` would and keeps its own slice, so rank r's experts are experts
    r*l.. of `SoftMoE` under that seed (different on every rank) and the router is the same
    replica everywhere. The whole bank of this one layer exists only during construction.
    See the module docstring for gradient bookkeeping.
    """

    def __init__(self, dim: int, num_experts: int, slots_per_expert: int, hidden_dim: int,
                 expert: Union[str, ExpertFactory] = "mlp", normalize: bool = True, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ExpertParallelSoftMoE needs an initialised torch.distributed "
                               "process group (init_process_group first); use SoftMoE otherwise")
        world = dist.get_world_size(group)
        if num_experts % world:
            raise ValueError(f"ExpertParallelSoftMoE: {num_experts} experts cannot be split over "
                             f"{world} ranks; choose num_experts divisible by the group size")
        rank = dist.get_rank(group)

        def local(e: int, d: int, h: int) -> nn.Module:    # the whole bank drawn, a slice kept
            return shard_experts(make_experts(expert, e, d, h), rank, world)

        super().__init__(dim, num_experts, slots_per_expert, hidden_dim, expert=local,
                         normalize=normalize)
        self.group, self.world, self.rank = group, world, rank
        self.local_experts = num_experts // world
        self._mark_experts()

    def _mark_experts(self) -> None:
        """Tag this rank's expert weights (`expert_parameters` finds them by the tag)."""
        for param in self.experts.parameters():
            param.expert_parallel = True

    @classmethod
    def from_soft_moe(cls, layer: SoftMoE, group=None) -> "ExpertParallelSoftMoE":
        """This rank's share of a single-process layer: its router and experts [rank*l, ...)."""
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        # meta: no whole bank in memory; fork_rng: the caller's random stream is left as it was
        with torch.random.fork_rng(devices=[]):
            with torch.device("meta"):
                out = cls(layer.dim, layer.num_experts, layer.slots_per_expert, layer.hidden_dim,
                          expert=type(layer.experts), normalize=layer.router.normalize,
                          group=group)
            out.to_empty(device=layer.router.phi.device).to(dtype=layer.router.phi.dtype)
            out._mark_experts()             # to_empty made new parameter objects
            out.router.load_state_dict(layer.router.state_dict())
            out.experts.load_state_dict(shard_experts(layer.experts, rank, world).state_dict())
        return out

    def run_experts(self, slots: Tensor) -> Tensor:
        """slots [b, m, d] of this rank -> expert outputs [b, m, d], experts anywhere in the group."""
        b, s = slots.shape[0], self.slots_per_expert
        batches = self._batch_sizes(b, slots.device)
        to_send = [self.local_experts * b * s] * self.world
        to_receive = [self.local_experts * bi * s for bi in batches]
        received = all_to_all(pack_slots(slots, self.world, s), to_receive, to_send, self.group)
        outputs = self.experts(rows_per_expert(received, batches, self.local_experts, s))
        returned = all_to_all(rows_to_sources(outputs, batches, s), to_send, to_receive,
                              self.group)
        return unpack_slots(returned, self.world, b, s)

    def _batch_sizes(self, b: int, device) -> list[int]:
        """Local batch size of every rank of the group (one small all_gather)."""
        mine = torch.tensor([b], dtype=torch.int64, device=device)
        every = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine, group=self.group)
        return [int(t) for t in every]

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", world={self.world}, rank={self.rank}, "
                f"local_experts={self.local_experts}")


def expert_parallelize(module: nn.Module, group=None) -> nn.Module:
    """Replace every SoftMoE inside `module` (in place) by this rank's ExpertParallelSoftMoE share,
    weights kept; returns `module`. Call on every rank of `group` with identical weights, before
    wrapping the model for data parallelism. A bare SoftMoE is returned converted."""
    if type(module) is SoftMoE:
        return ExpertParallelSoftMoE.from_soft_moe(module, group)
    for name, child in list(module.named_children()):
        if type(child) is SoftMoE:
            setattr(module, name, ExpertParallelSoftMoE.from_soft_moe(child, group))
        else:
            expert_parallelize(child, group)
    return module


def expert_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of every expert-parallel weight in `module` (to keep them out of the
    data-parallel broadcast/all-reduce of the group, see the module docstring)."""
    for name, param in module.named_parameters():
        if getattr(param, "expert_parallel", False):
            yield name, param

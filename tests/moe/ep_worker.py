"""Worker of test_expert_parallel.py, run by torchrun on gloo: the expert-parallel layer must give
the outputs and gradients of the single-process SoftMoE with the same weights.

Every rank builds the same full layer and global batch (same seed), keeps its own slice of the
batch (uneven on purpose: rank r gets r+1 samples) and its share of the experts. The loss is the
sum over the global batch, so expert gradients (which sum every rank's contribution) compare
directly and router gradients after an all-reduce sum.
"""
import sys

import torch
import torch.distributed as dist

from moe import SoftMoE
from moe.parallel import ExpertParallelSoftMoE, expert_parallelize, expert_parameters
from moe.experts import shard_experts

EXPERTS, SLOTS, DIM, HIDDEN, TOKENS = 4, 3, 8, 16, 7


def global_batch(world: int):
    """x [B, n, d] with B = 1 + 2 + ... + world, a padding mask, and loss weights like y."""
    total = world * (world + 1) // 2
    x = torch.randn(total, TOKENS, DIM, dtype=torch.float64)
    mask = torch.ones(total, TOKENS, dtype=torch.bool)
    mask[0, -2:] = False                                  # padded tokens on rank 0
    mask[-1, -3:] = False                                 # and on the last rank
    return x, mask, torch.randn(total, TOKENS, DIM, dtype=torch.float64)


def check(expert: str, rank: int, world: int) -> None:
    torch.manual_seed(0)
    full = SoftMoE(DIM, EXPERTS, SLOTS, HIDDEN, expert=expert).double()
    x, mask, weight = global_batch(world)
    start, stop = rank * (rank + 1) // 2, (rank + 1) * (rank + 2) // 2
    local = ExpertParallelSoftMoE.from_soft_moe(full, group=None)
    assert local.experts.num_experts == EXPERTS // world

    x_full = x.clone().requires_grad_(True)
    y_full, m_full = full(x_full, mask)
    (y_full * weight).sum().backward()

    x_mine = x[start:stop].clone().requires_grad_(True)
    y, metrics = local(x_mine, mask[start:stop])
    (y * weight[start:stop]).sum().backward()

    torch.testing.assert_close(y, y_full[start:stop].detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x_mine.grad, x_full.grad[start:stop], rtol=1e-10, atol=1e-12)
    want = shard_experts(full.experts, rank, world)
    got = dict(expert_parameters(local.experts))
    assert set(got) == {name for name, _ in want.named_parameters()}
    for name, param in full.experts.named_parameters():
        lo = rank * (EXPERTS // world)
        torch.testing.assert_close(got[name].grad, param.grad[lo:lo + EXPERTS // world],
                                   rtol=1e-10, atol=1e-12)
    for name, param in local.router.named_parameters():
        grad = param.grad.clone()
        dist.all_reduce(grad)
        torch.testing.assert_close(grad, full.router.get_parameter(name).grad,
                                   rtol=1e-10, atol=1e-12)
    assert metrics.as_dict()["dispatch_entropy"] > 0
    print(f"EP_OK {expert} rank {rank}", flush=True)


class TwoLayers(torch.nn.Module):
    """Residual stack of two Soft-MoE layers, as a transformer would hold them."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(SoftMoE(DIM, EXPERTS, SLOTS, HIDDEN) for _ in range(2))

    def forward(self, x, mask):
        for layer in self.layers:
            x = x + layer(x, mask)[0]
        return x


def check_conversion(rank: int, world: int) -> None:
    """expert_parallelize swaps every SoftMoE of a model for its share, outputs unchanged."""
    torch.manual_seed(1)
    model = TwoLayers().double()
    x, mask, _ = global_batch(world)
    start, stop = rank * (rank + 1) // 2, (rank + 1) * (rank + 2) // 2
    with torch.no_grad():
        want = model(x, mask)[start:stop]
        converted = expert_parallelize(model)
        assert all(isinstance(layer, ExpertParallelSoftMoE) for layer in converted.layers)
        torch.testing.assert_close(converted(x[start:stop], mask[start:stop]), want,
                                   rtol=1e-10, atol=1e-12)
    print(f"EP_OK convert rank {rank}", flush=True)


def check_bf16(rank: int, world: int) -> None:
    """bf16 slots cross gloo's all-to-all too; outputs agree with the bf16 single-process layer."""
    torch.manual_seed(2)
    full = SoftMoE(DIM, EXPERTS, SLOTS, HIDDEN).bfloat16()
    x, mask, _ = global_batch(world)
    x = x.bfloat16()
    start, stop = rank * (rank + 1) // 2, (rank + 1) * (rank + 2) // 2
    local = ExpertParallelSoftMoE.from_soft_moe(full)
    assert local.router.phi.dtype == torch.bfloat16
    with torch.no_grad():
        y, _ = local(x[start:stop], mask[start:stop])
        torch.testing.assert_close(y, full(x, mask)[0][start:stop], rtol=2e-2, atol=2e-2)
    print(f"EP_OK bf16 rank {rank}", flush=True)


def check_direct(rank: int, world: int) -> None:
    """Built directly under one seed, each rank holds ITS experts: experts rank*l.. of the
    single-process layer under that seed (issue 16: they used to be identical on every rank);
    `from_soft_moe` draws nothing from the caller's RNG."""
    torch.manual_seed(4)
    layer = ExpertParallelSoftMoE(DIM, EXPERTS, SLOTS, HIDDEN, expert="swiglu")
    torch.manual_seed(4)
    full = SoftMoE(DIM, EXPERTS, SLOTS, HIDDEN, expert="swiglu")
    for name, param in shard_experts(full.experts, rank, world).named_parameters():
        assert torch.equal(layer.experts.get_parameter(name), param), name
    assert torch.equal(layer.router.phi, full.router.phi)
    mine = layer.experts.w_in.detach().clone()
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    assert all(not torch.equal(every[0], other) for other in every[1:])
    before = torch.get_rng_state()
    ExpertParallelSoftMoE.from_soft_moe(full)
    assert torch.equal(torch.get_rng_state(), before)
    print(f"EP_OK direct rank {rank}", flush=True)


def main() -> int:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    for expert in ("mlp", "swiglu"):
        check(expert, rank, world)
    check_conversion(rank, world)
    check_bf16(rank, world)
    check_direct(rank, world)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

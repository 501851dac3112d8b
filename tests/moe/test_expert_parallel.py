"""Expert-parallel Soft MoE: the slot layout of the exchange (simulated in one process) and
parity with the single-process layer on 2 gloo ranks (torchrun subprocess, ep_worker.py)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe import SoftMoE
from moe.experts import shard_experts
from moe.parallel import pack_slots, rows_per_expert, rows_to_sources, unpack_slots

torch.set_num_threads(1)
WORKER = Path(__file__).with_name("ep_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def simulated_all_to_all(sent: list[torch.Tensor], splits: list[list[int]]) -> list[torch.Tensor]:
    """What all_to_all_single delivers: rank j receives chunk j of every rank, in rank order."""
    chunks = [rows.split(sizes) for rows, sizes in zip(sent, splits)]
    return [torch.cat([chunks[i][j] for i in range(len(sent))]) for j in range(len(sent))]


@pytest.mark.parametrize("batches", [(2, 2), (1, 3), (2, 1, 3, 1)])
def test_exchange_layout_gives_every_expert_its_own_slots(batches):
    world, e, s, d = len(batches), 4, 3, 5
    torch.manual_seed(0)
    full = SoftMoE(d, e, s, 16)
    slots = [torch.randn(b, e * s, d) for b in batches]
    local = e // world
    sent = [pack_slots(x, world, s) for x in slots]
    splits = [[local * b * s] * world for b in batches]
    received = simulated_all_to_all(sent, splits)
    outputs = []
    for rank in range(world):
        bank = shard_experts(full.experts, rank, world)
        rows = rows_per_expert(received[rank], list(batches), local, s)
        assert rows.shape == (local, sum(batches) * s, d)
        outputs.append(rows_to_sources(bank(rows), list(batches), s))
    back_splits = [[local * b * s for b in batches] for _ in range(world)]
    returned = simulated_all_to_all(outputs, back_splits)
    for rank, b in enumerate(batches):
        got = unpack_slots(returned[rank], world, b, s)
        torch.testing.assert_close(got, full.run_experts(slots[rank]), rtol=1e-5, atol=1e-6)


def test_pack_sends_each_rank_the_slots_of_its_experts():
    world, e, s, b = 2, 4, 2, 3
    slot_ids = torch.arange(e * s, dtype=torch.float32)
    slots = slot_ids.expand(b, e * s)[..., None]                  # [b, m, 1]: value = slot index
    chunk0, chunk1 = pack_slots(slots, world, s).split(b * s * e // world)
    # rank 0 holds experts 0, 1 -> slots 0..3; rank 1 experts 2, 3 -> slots 4..7
    assert set(chunk0.flatten().tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert set(chunk1.flatten().tolist()) == {4.0, 5.0, 6.0, 7.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
def test_two_gloo_ranks_match_single_process_outputs_and_gradients():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER)]
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    for expert in ("mlp", "swiglu", "convert", "bf16", "direct"):
        for rank in (0, 1):
            assert f"EP_OK {expert} rank {rank}" in run.stdout, log[-4000:]


def test_without_process_group_the_error_says_what_to_do():
    from moe.parallel import ExpertParallelSoftMoE
    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialised in this test process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ExpertParallelSoftMoE(8, 4, 2, 16)

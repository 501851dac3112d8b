"""Checkpoint folders without DeepSpeed: what counts as complete, rotation, RNG round trip,
and the launcher environments the process-group set-up understands."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from specaware.training import checkpoint
from specaware.training.distributed import detect, parse_nodelist


def fake_checkpoint(root, step: int, complete: bool = True, tmp: bool = False):
    name = checkpoint.step_name(step)
    path = root / "checkpoints" / (f".tmp-{name}" if tmp else name)
    (path / checkpoint.DS_TAG).mkdir(parents=True)
    torch.save({"module": {"w": torch.zeros(2)}},
               path / checkpoint.DS_TAG / "mp_rank_00_model_states.pt")
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    if complete:
        (path / checkpoint.MARKER).write_text("{}")
    return path


def test_resume_auto_ignores_interrupted_and_unmarked_checkpoints(tmp_path):
    fake_checkpoint(tmp_path, 100)
    fake_checkpoint(tmp_path, 200)
    fake_checkpoint(tmp_path, 300, complete=False)        # crashed before the marker
    fake_checkpoint(tmp_path, 400, tmp=True)              # crashed before the rename
    assert checkpoint.resolve_resume("auto", tmp_path).name == checkpoint.step_name(200)
    assert [p.name for p in checkpoint.list_complete(tmp_path)] == [
        checkpoint.step_name(100), checkpoint.step_name(200)]


def test_resume_auto_without_checkpoints_starts_fresh_and_a_bad_path_explains(tmp_path):
    assert checkpoint.resolve_resume("auto", tmp_path / "nothing") is None
    assert checkpoint.resolve_resume(None, tmp_path) is None
    unmarked = fake_checkpoint(tmp_path, 5, complete=False)
    with pytest.raises(FileNotFoundError, match="no 'complete' marker"):
        checkpoint.resolve_resume(str(unmarked), tmp_path)


def test_rotation_keeps_last_k_and_every_multiple_and_drops_leftovers(tmp_path):
    for step in (100, 200, 300, 400, 500):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 600, tmp=True)
    removed = checkpoint.rotate(tmp_path / "checkpoints", keep_last=2, keep_every=200)
    kept = [p.name for p in checkpoint.list_complete(tmp_path)]
    assert kept == [checkpoint.step_name(s) for s in (200, 400, 500)]
    assert len(removed) == 3 and not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_rng_state_round_trip_restores_every_generator():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    tensors, meta = checkpoint.rng_state()
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    checkpoint.set_rng_state(tensors, meta)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_launcher_environments_are_detected():
    torchrun = detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                       "MASTER_ADDR": "node7", "MASTER_PORT": "29400"})
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank) == (3, 4, 1)
    assert (torchrun.master_addr, torchrun.master_port, torchrun.launcher) == (
        "node7", 29400, "torchrun")
    # the deepspeed launcher without --no_local_rank passes --local_rank instead of LOCAL_RANK
    assert detect({"RANK": "1", "WORLD_SIZE": "2"}, local_rank=1).local_rank == 1
    slurm = detect({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                    "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "1234"})
    assert (slurm.rank, slurm.world_size, slurm.local_rank) == (9, 16, 1)
    assert (slurm.master_addr, slurm.master_port, slurm.launcher) == ("gpu07", 16234, "slurm")
    single = detect({})
    assert (single.rank, single.world_size, single.launcher) == (0, 1, "single")


def test_slurm_nodelists_expand():
    assert parse_nodelist("gpu[01-03,7],login-2") == ["gpu01", "gpu02", "gpu03", "gpu7",
                                                      "login-2"]
    assert parse_nodelist("a1,b[9-10]") == ["a1", "b9", "b10"]


def test_bad_rank_variable_names_the_variable():
    with pytest.raises(RuntimeError, match="RANK='x'"):
        detect({"RANK": "x", "WORLD_SIZE": "2"})

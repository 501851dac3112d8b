"""A plain `specaware pretrain` in one process, no launcher: DeepSpeed gets its rank variables
from us (never MPI), trains the real debug model, checkpoints, and a second call resumes."""
from __future__ import annotations

import pytest

from specaware.training import checkpoint
from tests.training.launching import launch


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, base_items):
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    items = [*base_items, "train.steps=3", "checkpoint.every=2", "train.grad_accum=2"]
    first = launch(run_dir, items, launcher="plain").check()
    more = launch(run_dir, [*items, "train.steps=4"], launcher="plain", resume="auto").check()
    return first, more


def test_plain_process_trains_and_checkpoints(plain_run):
    first, _ = plain_run
    assert "via single" in first.output and "mpi4py" not in first.output
    assert [p.name for p in checkpoint.list_complete(first.run_dir)][:2] == [
        checkpoint.step_name(2), checkpoint.step_name(3)]
    state = checkpoint.read_state(first.run_dir / "checkpoints" / checkpoint.step_name(3))
    assert state["world_size"] == 1
    # 2 micro-batches of 4 tiles per step, one process
    assert state["samples_seen"] == 3 * 2 * 4
    assert state["config"]["train"]["grad_accum"] == 2


def test_plain_process_resumes_and_extends_the_run(plain_run):
    _, more = plain_run
    assert f"resumed from {more.run_dir / 'checkpoints' / checkpoint.step_name(3)}" in more.output
    steps = [r["step"] for r in more.records()]
    assert steps == [1, 2, 3, 4]           # the resumed call logged step 4 only
    state = checkpoint.read_state(checkpoint.find_latest(more.run_dir))
    assert state["step"] == 4 and state["samples_seen"] == 4 * 2 * 4

"""A plain `specaware pretrain` in one process, no launcher: DeepSpeed gets its rank variables
from us (never MPI), trains the real debug model, checkpoints, and a second call resumes."""
from __future__ import annotations

import pytest

from specaware.training import checkpoint
from tests.training.launching import launch

ITEMS = ["train.steps=3", "checkpoint.every=2", "train.grad_accum=2"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, base_items):
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    items = [*base_items, *ITEMS]
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


def test_checkpoint_records_its_optimizer_groups_and_refuses_other_ones(plain_run, tmp_path,
                                                                      base_items):
    """trainer_state.json holds the optimizer's group layout; a checkpoint whose layout differs
    from the run's (another grouping rule, model or setting) is refused before DeepSpeed reads
    it, with both layouts named."""
    import json
    import shutil
    first, _ = plain_run
    state = checkpoint.read_state(first.run_dir / "checkpoints" / checkpoint.step_name(3))
    groups = state["optimizer_groups"]
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert all(g["tensors"] > 0 and g["elements"] >= g["tensors"] for g in groups)
    run_dir = tmp_path / "run"
    shutil.copytree(first.run_dir, run_dir)
    latest = checkpoint.find_latest(run_dir)
    saved = checkpoint.read_state(latest)
    saved["optimizer_groups"][0]["tensors"] += 1      # as if a tensor had moved between groups
    (latest / checkpoint.STATE_FILE).write_text(json.dumps(saved))
    refused = launch(run_dir, [*base_items, *ITEMS], launcher="plain", resume="auto")
    assert refused.returncode != 0
    assert f"{latest}: its optimizer state has the groups [decay" in refused.output
    assert "cannot be resumed" in refused.output



def test_a_checkpoint_from_other_groups_without_a_record_gets_the_same_advice(tmp_path):
    """Checkpoints written before the layout was recorded: torch's own complaint about a
    parameter group is turned into the same advice, naming the checkpoint."""
    class Engine:
        def load_checkpoint(self, *args, **kwargs):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
    with pytest.raises(checkpoint.CheckpointReadError) as err:
        checkpoint.load(Engine(), tmp_path / "step_00000006", env=None)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'step_00000006'}: its optimizer state does not fit")
    assert "cannot be resumed" in message and "specaware export" in message


def test_group_check_passes_equal_and_unrecorded_layouts(tmp_path):
    layout = [{"name": "decay", "tensors": 3, "elements": 30}]
    checkpoint.check_groups({"optimizer_groups": layout}, layout, tmp_path)
    checkpoint.check_groups({}, layout, tmp_path)            # older checkpoints: not checked
    with pytest.raises(checkpoint.CheckpointReadError, match="decay 3 tensors / 30 values"):
        checkpoint.check_groups({"optimizer_groups": layout},
                                [{"name": "decay", "tensors": 3, "elements": 31}], tmp_path)

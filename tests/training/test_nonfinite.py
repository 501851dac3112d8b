"""Non-finite losses: a NaN micro-batch is skipped (no optimizer step, counted, logged), and a
run whose loss stays NaN stops with an error that says what to do.

In-process single-process runs of the real trainer loop (DeepSpeed ZeRO-1 on gloo) with the
tiny stand-in MAE of standins.py, which turns its loss NaN at chosen forward calls.
"""
from __future__ import annotations

import os

import pytest

from specaware.training import checkpoint
from specaware.training.config import load_config
from specaware.training.trainer import NonFiniteLossError, run
from tests.training.launching import DEBUG_YAML
from tests.training.standins import TinyMAE, tiny_data


@pytest.fixture
def isolated_env():
    """run() exports RANK/WORLD_SIZE/MASTER_* for DeepSpeed; give the test process its own back."""
    saved = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


def tiny_config(tmp_path, *overrides: str):
    return load_config([DEBUG_YAML], [f"checkpoint.run_dir={tmp_path / 'run'}", "train.steps=6",
                                      "checkpoint.every=6", "train.log_every=1",
                                      "wandb.mode=disabled", "wandb.panel_every=0", *overrides])


def test_nan_micro_batch_is_skipped_and_training_goes_on(tmp_path, isolated_env, caplog):
    cfg = tiny_config(tmp_path)
    model = TinyMAE(nan_at_calls={3})
    summary = run(cfg, model_factory=lambda c: model, data_factory=tiny_data)
    assert summary["nonfinite_skipped"] == 1
    assert [s for s, _ in summary["losses"]] == [1, 2, 3, 4, 5, 6]
    assert all(loss == loss for _, loss in summary["losses"])   # no NaN reached the log
    assert model.calls == 7                                      # 6 steps + the skipped one
    assert "non-finite loss on some rank, micro-batch skipped" in caplog.text
    state = checkpoint.read_state(checkpoint.find_latest(cfg.checkpoint.run_dir))
    assert state["step"] == 6 and state["nonfinite_skipped"] == 1


def test_loss_that_stays_nan_stops_the_run_with_a_clear_error(tmp_path, isolated_env):
    cfg = tiny_config(tmp_path, "train.max_nonfinite=3")
    model = TinyMAE(nan_at_calls=set(range(3, 100)))
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive micro-batches at step 2.*optim\.lr"):
        run(cfg, model_factory=lambda c: model, data_factory=tiny_data)
    assert model.calls == 5                  # 2 good steps, then 3 NaN micro-batches
    assert checkpoint.find_latest(cfg.checkpoint.run_dir) is None

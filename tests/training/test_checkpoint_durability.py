"""Durable checkpoints without DeepSpeed (a stand-in engine writes torch.save files as DeepSpeed
does): every file and folder is flushed before the marker, a full disk says so and where,
leftovers of interrupted saves go away, and `--resume auto` steps over an unreadable newest
checkpoint to the previous one."""
from __future__ import annotations

import errno
import logging
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from specaware.training import checkpoint

ENV = SimpleNamespace(is_main=True, rank=0, world_size=1)


class FakeEngine:
    """Writes DeepSpeed's layout (TAG/mp_rank_00_model_states.pt) with torch.save; `fail` makes
    the write raise like a full disk does inside torch.save."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.module = torch.nn.Linear(2, 2)     # no expert weights: nothing split to save

    def save_checkpoint(self, path, tag, client_state, save_latest):
        folder = Path(path) / tag
        folder.mkdir(parents=True, exist_ok=True)
        if self.fail is not None:
            (folder / "mp_rank_00_model_states.pt").write_bytes(b"PK\x03\x04partial")
            raise self.fail
        torch.save({"module": {"w": torch.arange(4.0)}, **client_state},
                   folder / "mp_rank_00_model_states.pt")

    def load_checkpoint(self, path, tag, load_optimizer_states, load_lr_scheduler_states):
        """DeepSpeed returns (None, None) when the tag folder holds no states."""
        states = Path(path) / tag / "mp_rank_00_model_states.pt"
        if not states.is_file():
            return None, None
        self.loaded = torch.load(states, weights_only=True)
        return str(states), self.loaded


def _save(run_dir, step, engine=None):
    return checkpoint.save(engine or FakeEngine(), run_dir, step, {"config": {"a": 1}}, ENV)


def test_every_file_and_folder_is_flushed_before_the_marker(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    final = _save(tmp_path, 5)
    tmp = str(tmp_path / "checkpoints" / ".tmp-step_00000005")
    marker = synced.index(f"{tmp}/{checkpoint.MARKER}")
    before = set(synced[:marker])
    for name in ("ds/mp_rank_00_model_states.pt", "rng/rank_00000.safetensors",
                 "trainer_state.json", "config.yaml", "ds", "rng", ""):
        assert f"{tmp}/{name}".rstrip("/") in before, name
    assert synced[-1] == str(final.parent)          # the rename itself is made durable
    assert checkpoint.is_complete(final)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed "
                 "writing file data/0: file write failed"),
])
def test_full_disk_names_the_folder_and_keeps_the_previous_checkpoint(tmp_path, error):
    previous = _save(tmp_path, 5)
    with pytest.raises(checkpoint.CheckpointWriteError) as err:
        _save(tmp_path, 10, FakeEngine(fail=error))
    msg = str(err.value)
    assert "no space left on device" in msg and ".tmp-step_00000010" in msg and "GiB free" in msg
    assert err.value.errno == errno.ENOSPC
    assert not (tmp_path / "checkpoints" / ".tmp-step_00000010").exists()
    assert checkpoint.find_latest(tmp_path) == previous


def test_other_write_errors_propagate_unchanged(tmp_path):
    with pytest.raises(PermissionError):
        _save(tmp_path, 5, FakeEngine(fail=PermissionError("read-only file system")))


def test_partial_folders_are_removed_when_the_next_run_starts(tmp_path, caplog):
    done = _save(tmp_path, 5)
    partial = tmp_path / "checkpoints" / ".tmp-step_00000010"
    (partial / "ds").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.remove_partial(tmp_path) == [partial]
    assert not partial.exists() and done.is_dir()
    assert any("interrupted checkpoint save" in r.message for r in caplog.records)


def _damage(ckpt: Path, how: str) -> None:
    states = ckpt / checkpoint.DS_TAG / "mp_rank_00_model_states.pt"
    if how == "truncated":
        states.write_bytes(states.read_bytes()[: states.stat().st_size // 2])
    elif how == "garbage":
        states.write_bytes(b"\x00" * 512)
    elif how == "rng":
        (ckpt / "rng" / "rank_00000.safetensors").write_bytes(b"{not safetensors")
    else:
        (ckpt / checkpoint.STATE_FILE).write_text("{")


@pytest.mark.parametrize("how", ["truncated", "garbage", "rng", "state"])
def test_resume_auto_falls_back_past_an_unreadable_newest_checkpoint(tmp_path, caplog, how):
    older, newest = _save(tmp_path, 5), _save(tmp_path, 10)
    assert checkpoint.resolve_resume("auto", tmp_path) == newest
    _damage(newest, how)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.resolve_resume("auto", tmp_path) == older
    warned = [r.message for r in caplog.records if "falling back" in r.message]
    assert len(warned) == 1 and str(newest) in warned[0]
    with pytest.raises(checkpoint.CheckpointReadError, match="cannot be read") as err:
        checkpoint.resolve_resume(str(newest), tmp_path)       # an explicit path: no fallback
    assert "\n" not in str(err.value)


def test_resume_auto_with_no_readable_checkpoint_refuses_instead_of_starting_over(tmp_path):
    only = _save(tmp_path, 5)
    _damage(only, "truncated")
    with pytest.raises(checkpoint.CheckpointReadError, match="none of the 1 complete"):
        checkpoint.resolve_resume("auto", tmp_path)


def test_load_restores_weights_state_and_this_ranks_generators_in_process(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    ckpt = _save(tmp_path, 5)
    want = (torch.rand(3), np.random.rand(3), random.random())
    engine = FakeEngine()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    state = checkpoint.load(engine, ckpt, ENV)
    assert state == {"config": {"a": 1}, "step": 5}
    assert engine.loaded["step"] == 5 and torch.equal(engine.loaded["module"]["w"],
                                                      torch.arange(4.0))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_load_on_a_rank_the_checkpoint_lacks_keeps_its_fresh_seed(tmp_path, caplog):
    # the trainer's state carries the world size (trainer.py); its Linear draws from the RNG
    ckpt = checkpoint.save(FakeEngine(), tmp_path, 5, {"world_size": 1}, ENV)
    engine = FakeEngine()
    torch.manual_seed(9)
    want = torch.rand(3)
    torch.manual_seed(9)
    grown = SimpleNamespace(is_main=False, rank=1, world_size=2)
    with caplog.at_level(logging.WARNING):
        checkpoint.load(engine, ckpt, grown)
    assert torch.equal(torch.rand(3), want)
    assert "written by 1 processes, resuming on 2" in caplog.text


def test_load_of_an_empty_deepspeed_folder_says_to_delete_it(tmp_path):
    ckpt = _save(tmp_path, 5)
    (ckpt / checkpoint.DS_TAG / "mp_rank_00_model_states.pt").unlink()
    with pytest.raises(RuntimeError, match="found no checkpoint in .*step_00000005/ds"):
        checkpoint.load(FakeEngine(), ckpt, ENV)


def test_resume_auto_with_an_empty_run_logs_a_fresh_start_naming_the_folder(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=checkpoint.__name__):
        assert checkpoint.resolve_resume("auto", tmp_path) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"resume auto: no complete checkpoint in {tmp_path}, fresh start"]

"""Failures a user can fix are one error line naming the file, from `specaware` (tests/test_cli.py
covers the handler) and from `python -m specaware.training`, the launchers' entry point."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from specaware.cli import main as cli_main
from specaware.testing import write_geotiff, write_tiny_shards


@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_shard_of_an_empty_or_truncated_raster_is_one_line_with_the_fix(tmp_path, capsys, kind):
    scene = tmp_path / "scene.tif"
    if kind == "empty":
        scene.write_bytes(b"")
    else:
        wl = np.linspace(450, 2200, 8)
        cube = np.random.default_rng(0).uniform(0, 0.5, (8, 64, 64)).astype(np.float32)
        data = write_geotiff(tmp_path / "whole.tif", cube, wavelength=wl).read_bytes()
        scene.write_bytes(data[: len(data) // 2])
    assert cli_main(["shard", str(scene), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "scene.tif" in err
    assert "not a readable raster" in err and "re-download" in err


def test_launcher_entry_point_reports_a_bad_resume_path_in_one_line(tmp_path):
    """`--resume PATH` to a folder without a complete checkpoint: one line, exit 1, on the
    entry point torchrun and the deepspeed launcher start (not only `specaware pretrain`)."""
    from tests.training.launching import DEBUG_YAML, run_env
    shards = tmp_path / "shards"
    write_tiny_shards(shards, num_shards=1, per_shard=2, tile=16)
    (tmp_path / "half" / "checkpoints" / ".tmp-step_00000002").mkdir(parents=True)
    cmd = [sys.executable, "-m", "specaware.training", DEBUG_YAML, f"data.shards={shards}",
           f"checkpoint.run_dir={tmp_path / 'run'}", "--resume", str(tmp_path / "half")]
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and "not a complete checkpoint" in errors[0]
    assert str(tmp_path / "half") in errors[0]

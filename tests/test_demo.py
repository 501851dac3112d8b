"""`specaware demo` end to end at a tiny size: synth -> shard -> DeepSpeed pretraining (one
process) -> export -> three tasks pretrained vs random -> table, PNGs, report. One run shared by
every assertion (module fixture); a second run must reuse every stage."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from specaware.demo import pipeline
from specaware.demo.plan import QUICK, Plan

TASKS = ("classification", "segmentation", "change")
TINY = replace(Plan(), **{**QUICK, "scenes": 3, "size": 64, "pretrain_steps": 4, "procs": 1,
                          "finetune_epochs": 1, "finetune_seeds": (0,)})


def _run(out: Path, fresh: bool = False) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = pipeline.run(TINY, out, fresh)
    return code, buffer.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code, text = _run(out)
    return out, code, text


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_demo_prints_table_with_three_tasks_and_finite_numbers(demo):
    out, code, text = demo
    assert code == 0, text[-3000:]
    for task in TASKS:
        row = [line for line in text.splitlines() if line.startswith(task + " ")]
        assert row, f"no table row for {task}:\n{text[-2000:]}"
        numbers = re.findall(r"(-?\d+\.\d+) ± (\d+\.\d+)", row[-1])
        assert len(numbers) == 2, row[-1]          # pretrained and random init
        # percent; kappa may be negative after one epoch
        assert all(math.isfinite(float(m)) and -100 <= float(m) <= 100 for m, _ in numbers)
    assert "beats random initialisation on" in text


def test_demo_writes_report_with_valid_pngs(demo):
    out, code, _ = demo
    report = out / "report"
    pngs = ["pretrain_loss.png", *[f"map_{t}.png" for t in TASKS]]
    sensors = {"aviris-ng", "enmap", "emit", "sentinel-2a", "real-sentinel-2a"}
    pngs += [f"recon_{s}.png" for s in sensors]
    for name in pngs:
        w, h = _png_size(report / name)
        assert w > 100 and h > 100, name
    page = (report / "report.md").read_text()
    for name in pngs:
        assert f"({name})" in page, f"report.md does not show {name}"
    results = json.loads((report / "results.json").read_text())["results"]
    assert set(results) == set(TASKS)


def test_demo_export_loads_as_pretrained_encoder(demo):
    import specaware
    out, _, _ = demo
    encoder = specaware.load_pretrained(out / "export" / "specaware_demo.safetensors")
    meta = json.loads((out / "export" / "specaware_demo.json").read_text())
    assert meta["step"] == TINY.pretrain_steps
    assert encoder.embed_dim > 0


def test_demo_rerun_reuses_every_stage(demo):
    out, _, first = demo
    code, text = _run(out)
    assert code == 0
    ran = re.findall(r"^\[([\w-]+)\] done in", text, flags=re.M)
    assert ran == [], f"stages ran again instead of being reused: {ran}"
    assert text.count("reusing") == len(re.findall(r"^\[[\w-]+\] done in", first, flags=re.M))
    # same table as the first run, since nothing was recomputed
    table = lambda t: [line for line in t.splitlines() if line.startswith(TASKS)]  # noqa: E731
    assert table(text) == table(first)

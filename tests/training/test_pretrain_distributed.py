"""Acceptance of DeepSpeed pretraining on CPU/gloo with 2 processes (issue 5).

Real runs of `specaware_debug` on tiny real shards, one per launcher/stage, shared by the tests:
- zero1: torchrun, wandb offline, image panels, MFU (a configured peak) -> also the reference
  of the resume and export tests;
- zero2: launch/pretrain_torchrun.sh with a loader worker process, and a NaN loss injected on
  one rank (faults.py), which both ranks must skip;
- zero3: launch/pretrain_deepspeed.sh (single node);
- crashed + resumed: ZeRO-1 killed while writing its last checkpoint (torchrun), then
  `--resume auto` as a requeued Slurm job (launch/slurm/pretrain.sbatch, stand-in srun).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from specaware.training import checkpoint
from specaware.faults import EXIT_CODE
from tests.training.launching import EVERY, STEPS, launch, run_env
from tests.training.wandb_records import find_offline_run, history

pytestmark = pytest.mark.distributed

STAGE_RUNS = {1: "zero1", 2: "zero2", 3: "zero3"}
NAN_STEP = 3        # zero2: rank 1 alone sees a NaN loss in this (0-based) step


@pytest.fixture(scope="module")
def zero1(tmp_path_factory, base_items):
    run_dir = tmp_path_factory.mktemp("zero1") / "run"
    items = [*base_items, "deepspeed.zero_stage=1", "wandb.mode=offline",
             f"wandb.panel_every={EVERY}", "train.peak_tflops=1.0"]
    return launch(run_dir, items).check()


@pytest.fixture(scope="module")
def zero2(tmp_path_factory, base_items):
    run_dir = tmp_path_factory.mktemp("zero2") / "run"
    items = [*base_items, "deepspeed.zero_stage=2", "data.num_workers=1"]
    return launch(run_dir, items, launcher="torchrun.sh", fault=f"nan:{NAN_STEP}").check()


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, base_items):
    run_dir = tmp_path_factory.mktemp("zero3") / "run"
    return launch(run_dir, [*base_items, "deepspeed.zero_stage=3"], launcher="deepspeed.sh").check()


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, base_items):
    """ZeRO-1 killed in the middle of writing its last checkpoint (after checkpoint EVERY)."""
    run_dir = tmp_path_factory.mktemp("crash") / "run"
    items = [*base_items, "deepspeed.zero_stage=1"]
    result = launch(run_dir, items, fault=f"save:{STEPS}")
    return result, items


@pytest.fixture(scope="module")
def resumed(crashed):
    result, items = crashed
    return launch(result.run_dir, items, resume="auto", launcher="slurm").check()


def module_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """The live module weights a ZeRO-1/2 engine saved (replicated on every rank)."""
    files = sorted((ckpt / checkpoint.DS_TAG).glob("mp_rank_*_model_states.pt"))
    return torch.load(files[0], map_location="cpu", weights_only=False)["module"]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].float().reshape(-1) - b[k].float().reshape(-1)).abs().max())
               for k in a)


# --- training and checkpoints ----------------------------------------------------------------

@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stage_trains_and_writes_checkpoints(stage, request):
    run = request.getfixturevalue(STAGE_RUNS[stage])
    losses = run.losses()
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = np.mean([losses[s] for s in (1, 2, 3, 4)]), np.mean(
        [losses[s] for s in range(STEPS - 3, STEPS + 1)])
    assert last < first - 0.01, f"ZeRO-{stage}: loss did not decrease: {losses}"
    done = checkpoint.list_complete(run.run_dir)
    assert [p.name for p in done] == [checkpoint.step_name(EVERY), checkpoint.step_name(STEPS)]
    for ckpt in done:
        state = checkpoint.read_state(ckpt)
        assert state["config"]["deepspeed"]["zero_stage"] == stage
        assert state["world_size"] == 2 and state["model"] == "specaware_debug"
        assert state["data"]["segment_start"] == state["step"]
        assert sorted(p.name for p in (ckpt / "rng").iterdir()) == [
            "rank_00000.safetensors", "rank_00001.safetensors"]
        assert (ckpt / "config.yaml").is_file()
    assert (run.run_dir / "config.yaml").is_file()


def test_nan_on_one_rank_is_skipped_by_every_rank_and_training_goes_on(zero2):
    skipped = [line for line in zero2.output.splitlines()
               if f"step {NAN_STEP}: non-finite loss on some rank, micro-batch skipped" in line]
    assert len(skipped) == 2, skipped                   # once on each rank, nowhere else
    assert any("[rank 0]" in line for line in skipped) and any("[rank 1]" in line
                                                              for line in skipped)
    assert zero2.output.count("non-finite loss") == 2
    for ckpt in checkpoint.list_complete(zero2.run_dir):
        assert checkpoint.read_state(ckpt)["nonfinite_skipped"] == 1
    assert all(np.isfinite(v) for v in zero2.losses().values())


def test_zero1_and_zero3_give_the_same_loss_curve(zero1, zero3):
    a, b = zero1.losses(), zero3.losses()
    diffs = [abs(a[s] - b[s]) for s in a]
    assert max(diffs) < 1e-4, f"ZeRO-1 vs ZeRO-3 loss curves differ by up to {max(diffs):.2e}"


def test_summary_json_has_throughput_of_the_steady_steps(zero1):
    summary = json.loads((zero1.run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["zero_stage"] == 1
    assert summary["start_step"] == 0 and summary["end_step"] == STEPS
    assert summary["windows"] == STEPS - 1            # the start-up step is left out
    assert summary["final_loss"] == pytest.approx(zero1.losses()[STEPS])
    assert summary["tiles_per_s"] > 0 and summary["step_time_s"] > 0 and summary["mfu"] > 0
    # tiles/s counts both ranks: 2 x batch 4 tiles per step
    assert summary["tiles_per_s"] * summary["step_time_s"] == pytest.approx(8, rel=0.5)


def test_progress_line_with_eta_is_printed(zero1):
    assert f"step {STEPS}/{STEPS} 100.0%" in zero1.output
    assert "tiles/s" in zero1.output and "ETA 0:00:00" in zero1.output


# --- crash and resume ------------------------------------------------------------------------

def test_killed_run_leaves_interrupted_checkpoint_that_resume_ignores(crashed):
    result, _ = crashed
    assert result.returncode != 0
    # torchrun's failure summary names the rank's own exit code: the injected kill, not a crash
    assert re.search(rf"exitcode\s*:\s*{EXIT_CODE}\b", result.output), result.output[-2000:]
    root = result.run_dir / "checkpoints"
    assert (root / f".tmp-{checkpoint.step_name(STEPS)}").is_dir()
    assert [p.name for p in checkpoint.list_complete(result.run_dir)] == [
        checkpoint.step_name(EVERY)]
    assert checkpoint.resolve_resume("auto", result.run_dir).name == checkpoint.step_name(EVERY)


def test_resume_auto_reaches_the_same_weights_as_an_uninterrupted_run(resumed, zero1):
    assert f"resumed from {resumed.run_dir / 'checkpoints' / checkpoint.step_name(EVERY)}" \
        in resumed.output
    assert "rank 0/2 (local 0) via slurm" in resumed.output
    final = resumed.run_dir / "checkpoints" / checkpoint.step_name(STEPS)
    assert checkpoint.is_complete(final)
    assert not list((resumed.run_dir / "checkpoints").glob(".tmp-*"))
    reference = zero1.run_dir / "checkpoints" / checkpoint.step_name(STEPS)
    diff = max_diff(module_state(final), module_state(reference))
    assert diff < 1e-6, f"resumed weights differ from the uninterrupted run by {diff:.2e}"
    # the resumed segment logged the same losses as the uninterrupted run at those steps
    records = resumed.records()
    after = {r["step"]: r["loss"] for r in records[STEPS:]}
    assert sorted(after) == list(range(EVERY + 1, STEPS + 1))
    ref = zero1.losses()
    assert max(abs(after[s] - ref[s]) for s in after) < 1e-6


# --- export ----------------------------------------------------------------------------------

def test_export_from_zero3_loads_into_a_single_process_model(zero3, zero1, tiny_shards,
                                                             tmp_path):
    import specaware
    from safetensors.torch import load_file
    from specaware.data.stream import make_loader
    from specaware.model.variants import create_model_from_config

    out = tmp_path / "export" / "debug.safetensors"
    cmd = [str(Path(sys.executable).parent / "specaware"), "export", str(zero3.run_dir), str(out)]
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["format"] == "specaware-export/1" and meta["step"] == STEPS
    assert meta["model"] == "specaware_debug"

    # ZeRO-3 consolidation gives the weights ZeRO-1 keeps replicated (up to reduction order)
    exported = load_file(str(out))
    reference = module_state(zero1.run_dir / "checkpoints" / checkpoint.step_name(STEPS))
    # (bound: 6e-4 is a fifth of one AdamW step at the tests' lr 3e-3, which moves a weight
    # by up to ~lr; reduction order between stages was seen at 2.2e-4. A wrong or misordered
    # shard is off by the weights' own scale, ~1e-2 and more)
    diff = max_diff(exported, reference)
    assert diff < 6e-4, f"ZeRO-3 export differs from the ZeRO-1 weights by {diff:.2e}"

    # load_pretrained gives exactly the encoder of the exported MAE in one plain process
    encoder = specaware.load_pretrained(out).eval()
    full = create_model_from_config(meta["model_config"]).eval()
    full.load_state_dict(_shaped_like(exported, full.state_dict()))
    replica = create_model_from_config(meta["model_config"]).eval()
    replica.load_state_dict(_shaped_like(reference, replica.state_dict()))
    batch = next(iter(make_loader(str(tiny_shards), mode="eval", batch_size=4, num_workers=0)))
    with torch.no_grad():
        got = encoder.forward_features(batch)
        assert torch.equal(got, full.encoder.forward_features(batch))
        assert torch.allclose(got, replica.encoder.forward_features(batch), atol=1e-3)
    assert got.shape[0] == 4 and got.shape[-1] == encoder.embed_dim


def _shaped_like(state: dict, ref: dict) -> dict:
    """Undo the trainer's [] -> [1] promotion of scalar parameters (DeepSpeed needs >= 1 dim)."""
    return {k: v.reshape(ref[k].shape) for k, v in state.items()}


# --- tracking --------------------------------------------------------------------------------

def test_wandb_offline_run_has_logged_keys_and_panels(zero1):
    rows = history(find_offline_run(zero1.run_dir))
    steps = [r["_step"] for r in rows]
    assert sorted(set(steps)) == list(range(1, STEPS + 1))
    keys = set().union(*rows)
    for key in ("loss", "loss/sam", "loss/charbonnier", "lr", "grad_norm", "perf/tiles_per_s",
                "perf/tokens_per_s", "perf/mfu", "perf/step_time_s"):
        assert key in keys, f"{key} not logged to wandb; got {sorted(keys)}"
    moe = {k for k in keys if k.startswith("moe/")}
    assert any("dispatch_entropy" in k for k in moe) and any("expert_load" in k for k in moe)
    panels = [r for r in rows if r.get("panel/_type") == "image-file"]
    assert sorted(r["_step"] for r in panels) == [EVERY, STEPS]
    last = {k: v for r in rows if r["_step"] == STEPS for k, v in r.items()}
    assert 0 < last["perf/mfu"] < 1 and last["perf/tiles_per_s"] > 0 and last["grad_norm"] > 0


def test_panel_pngs_are_saved_in_the_run_folder(zero1):
    import matplotlib.image as mpimg

    for step in (EVERY, STEPS):
        png = zero1.run_dir / "panels" / f"step_{step:08d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(np.std(img[..., :3])) > 0.01       # not a blank canvas

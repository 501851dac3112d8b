"""`deepspeed.expert_parallel: 2` in real pretraining runs on 2 gloo processes (issue 19).

Runs of `specaware_debug` (one Soft-MoE layer of 4 experts) on tiny shards, 6 steps, shared:
- n1: every rank holds every expert (ZeRO-1), the reference;
- n2: experts split over the 2 ranks (ZeRO-2), same seed and global batch, checkpoints at 3, 6;
- n2_zero1: the same split under ZeRO-1;
- crashed + resumed: the n2 config killed while writing checkpoint 6, then `--resume auto`
  from checkpoint 3 with the same config: its weights must be n2's;
- n2_bf16 (+ crashed and resumed): the split under ZeRO-1 in bf16 (DeepSpeed's bf16 optimizer
  with expert parameter groups), which must keep fp32 master experts and resume exactly.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specaware.training import checkpoint
from specaware.training.expert_parallel import EXPERTS_DIR
from tests.training.launching import DEBUG_YAML, FAST, launch, run_env

pytestmark = pytest.mark.distributed

STEPS, EVERY = 6, 3
EXPERT_KEYS = ("encoder.blocks.1.mlp.experts.w1", "encoder.blocks.1.mlp.experts.b1",
               "encoder.blocks.1.mlp.experts.w2", "encoder.blocks.1.mlp.experts.b2")


@pytest.fixture(scope="module")
def items(tiny_shards) -> list[str]:
    return [DEBUG_YAML, f"data.shards={tiny_shards}", *FAST, f"train.steps={STEPS}",
            f"checkpoint.every={EVERY}"]


@pytest.fixture(scope="module")
def n1(tmp_path_factory, items):
    run_dir = tmp_path_factory.mktemp("ep_n1") / "run"
    return launch(run_dir, [*items, "deepspeed.zero_stage=1"]).check()


N2 = ["deepspeed.zero_stage=2", "deepspeed.expert_parallel=2"]


@pytest.fixture(scope="module")
def n2(tmp_path_factory, items):
    run_dir = tmp_path_factory.mktemp("ep_n2") / "run"
    return launch(run_dir, [*items, *N2]).check()


@pytest.fixture(scope="module")
def n2_zero1(tmp_path_factory, items):
    run_dir = tmp_path_factory.mktemp("ep_n2_zero1") / "run"
    # checkpoints as n1's: the data stream restarts after each one (trainer.py)
    return launch(run_dir, [*items, "deepspeed.zero_stage=1", "deepspeed.expert_parallel=2"]).check()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, items):
    run_dir = tmp_path_factory.mktemp("ep_crash") / "run"
    crashed = launch(run_dir, [*items, *N2], fault=f"save:{STEPS}")
    assert crashed.returncode != 0
    assert [p.name for p in checkpoint.list_complete(run_dir)] == [checkpoint.step_name(EVERY)]
    return launch(run_dir, [*items, *N2], resume="auto").check()


BF16 = ["deepspeed.zero_stage=1", "deepspeed.expert_parallel=2", "deepspeed.precision=bf16"]


@pytest.fixture(scope="module")
def n2_bf16(tmp_path_factory, items):
    return launch(tmp_path_factory.mktemp("ep_bf16") / "run", [*items, *BF16]).check()


@pytest.fixture(scope="module")
def resumed_bf16(tmp_path_factory, items):
    run_dir = tmp_path_factory.mktemp("ep_bf16_crash") / "run"
    crashed = launch(run_dir, [*items, *BF16], fault=f"save:{STEPS}")
    assert crashed.returncode != 0
    return launch(run_dir, [*items, *BF16], resume="auto").check()


def final(run) -> Path:
    return run.run_dir / "checkpoints" / checkpoint.step_name(STEPS)


def export(run, out: Path) -> dict[str, torch.Tensor]:
    cmd = [str(Path(sys.executable).parent / "specaware"), "export", str(run.run_dir), str(out)]
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return load_file(str(out))


@pytest.mark.parametrize("split", ["n2", "n2_zero1"])
def test_split_experts_give_the_loss_curve_of_replicated_experts(n1, split, request):
    a, b = n1.losses(), request.getfixturevalue(split).losses()
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    diffs = [abs(a[s] - b[s]) for s in a]
    assert max(diffs) < 1e-4, f"N=2 vs N=1 loss curves differ by up to {max(diffs):.2e}: {a} {b}"
    assert a[1] != a[STEPS]                       # the curve moves: the comparison means something


def test_each_rank_holds_half_of_the_expert_weights(n1, n2):
    one = json.loads((n1.run_dir / "summary.json").read_text())
    two = json.loads((n2.run_dir / "summary.json").read_text())
    assert one["expert_parallel"] == 1 and two["expert_parallel"] == 2
    assert one["expert_params"] > 0 and two["expert_params"] * 2 == one["expert_params"]
    assert one["params"] - two["params"] == one["expert_params"] // 2
    files = sorted((final(n2) / EXPERTS_DIR).iterdir())
    assert [f.name for f in files] == ["ep_rank_00000.safetensors", "ep_rank_00001.safetensors"]
    for f in files:                               # each rank wrote its own 2 of the 4 experts
        shard = load_file(str(f))
        assert sorted(shard) == sorted(EXPERT_KEYS)
        assert all(t.shape[0] == 2 and t.dtype == torch.float32 for t in shard.values())
    a, b = (load_file(str(f)) for f in files)
    assert not torch.equal(a["encoder.blocks.1.mlp.experts.w1"],
                           b["encoder.blocks.1.mlp.experts.w1"])


def test_killed_and_resumed_run_reaches_the_weights_of_the_uninterrupted_one(resumed, n2):
    assert "resumed from" in resumed.output
    got, want = final(resumed), final(n2)
    for name in ("ep_rank_00000.safetensors", "ep_rank_00001.safetensors"):
        a = load_file(str(got / EXPERTS_DIR / name))
        b = load_file(str(want / EXPERTS_DIR / name))
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert diff < 1e-6, f"{name}: resumed experts differ by {diff:.2e}"
    ref = n2.losses()
    after = {r["step"]: r["loss"] for r in resumed.records()[STEPS:]}
    assert sorted(after) == list(range(EVERY + 1, STEPS + 1))
    assert max(abs(after[s] - ref[s]) for s in after) < 1e-6


def test_export_of_split_experts_is_the_whole_model(n1, n2, tiny_shards, tmp_path):
    import specaware
    from specaware.data.stream import make_loader
    from specaware.model.variants import create_model_from_config

    split = export(n2, tmp_path / "n2.safetensors")
    whole = export(n1, tmp_path / "n1.safetensors")
    assert sorted(split) == sorted(whole)
    assert split["encoder.blocks.1.mlp.experts.w1"].shape[0] == 4       # every expert
    # the gathered model: each expert-parallel rank's experts, in expert order
    shards = [load_file(str(final(n2) / EXPERTS_DIR / f"ep_rank_0000{r}.safetensors"))
              for r in (0, 1)]
    for key in EXPERT_KEYS:
        assert torch.equal(split[key], torch.cat([s[key] for s in shards]))
    # the same training with every expert on every rank (up to reduction order; a misplaced
    # expert would be off by the weights' own scale, ~1e-2)
    diff = max(float((split[k] - whole[k]).abs().max()) for k in split)
    assert diff < 2e-4, f"N=2 export differs from the N=1 export by {diff:.2e}"

    encoder = specaware.load_pretrained(tmp_path / "n2.safetensors").eval()
    meta = json.loads((tmp_path / "n2.json").read_text())
    full = create_model_from_config(meta["model_config"]).eval()
    full.load_state_dict({k: v.reshape(full.state_dict()[k].shape) for k, v in split.items()})
    batch = next(iter(make_loader(str(tiny_shards), mode="eval", batch_size=4, num_workers=0)))
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(batch), full.encoder.forward_features(batch))


def test_bf16_split_experts_train_like_fp32_and_keep_fp32_masters(n1, n2_bf16):
    """bf16 with expert_parallel=2 at ZeRO-1: the loss curve stays within bf16 rounding of the
    fp32 replicated run, and each rank's checkpointed experts are fp32 master weights (values
    a bf16 copy could not hold), so resuming does not round them."""
    a, b = n1.losses(), n2_bf16.losses()
    assert sorted(b) == list(range(1, STEPS + 1)) and a[1] != a[STEPS]
    diffs = [abs(a[s] - b[s]) for s in a]
    assert max(diffs) < 5e-3, f"bf16 N=2 vs fp32 N=1 loss curves differ by {max(diffs):.2e}"
    for name in ("ep_rank_00000.safetensors", "ep_rank_00001.safetensors"):
        shard = load_file(str(final(n2_bf16) / EXPERTS_DIR / name))
        assert sorted(shard) == sorted(EXPERT_KEYS)
        for key, t in shard.items():
            assert t.dtype == torch.float32 and t.shape[0] == 2, key
            assert not torch.equal(t.to(torch.bfloat16).float(), t), f"{name} {key} is bf16"


def test_bf16_split_experts_resume_exactly(resumed_bf16, n2_bf16):
    assert "resumed from" in resumed_bf16.output
    for name in ("ep_rank_00000.safetensors", "ep_rank_00001.safetensors"):
        a = load_file(str(final(resumed_bf16) / EXPERTS_DIR / name))
        b = load_file(str(final(n2_bf16) / EXPERTS_DIR / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ref = n2_bf16.losses()
    after = {r["step"]: r["loss"] for r in resumed_bf16.records()[STEPS:]}
    assert sorted(after) == list(range(EVERY + 1, STEPS + 1))
    assert all(after[s] == ref[s] for s in after)

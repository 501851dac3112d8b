"""bf16 numerics of pretraining, the ZeRO-0 bf16 export, determinism and normalisation that
would leak hidden pixels (issue 16, items 2, 3, 6, 7)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import specaware
from specaware.config import ConfigError
from specaware.model.target_norm import target_statistics
from specaware.training import checkpoint
from specaware.training.config import load_config
from specaware.training.ds_config import make_ds_config
from specaware.training.trainer import Trainer
from tests.training.launching import launch, run_env


def reflectance_tile(gen) -> dict:
    """2 tiles of 24 bands, 32 px, reflectance 0.3 +- 0.02, 3 % of the pixels invalid."""
    image = 0.3 + 0.02 * torch.randn(2, 24, 32, 32, generator=gen)
    valid = torch.rand(2, 24, 32, 32, generator=gen) >= 0.03
    return {"image": image * valid, "valid": valid,
            "wavelength": torch.linspace(420.0, 2400.0, 24).expand(2, 24).clone(),
            "fwhm": torch.full((2, 24), 10.0), "gsd": torch.tensor([5.0, 5.0]),
            "band_mask": torch.ones(2, 24, dtype=torch.bool),
            "sensor": ["aviris-ng"] * 2, "level": ["L2"] * 2}


@pytest.mark.parametrize("norm", ["sample", "band"])
def test_bf16_run_gets_the_target_statistics_of_fp32_within_1e_3(norm):
    """The batch as the trainer hands it to a bf16 engine: the target statistics (means and
    stds in std units) match fp32's within 1e-3. Casting pixels to bf16 first was off by up
    to 0.14 std units."""
    torch.manual_seed(0)
    model = specaware.create_model("specaware_debug", loss={"target_norm": norm})
    batch = reflectance_tile(torch.Generator().manual_seed(1))
    stats = {}
    for dtype in (torch.float32, torch.bfloat16):
        engine = SimpleNamespace(module=model.to(dtype))
        trainer = Trainer(None, None, torch.device("cpu"), engine, None, None,
                          data_factory=lambda *_: [batch])
        inputs = model.encoder.prepare(trainer._next_batch(0))
        keep = torch.arange(0, 16, 4).expand(2, -1)           # 4 visible patches of 16
        stats[dtype] = target_statistics(inputs, keep, norm)
    ref, got = stats[torch.float32], stats[torch.bfloat16]
    scale = ref["std"]
    assert float(((got["mean"] - ref["mean"]) / scale).abs().max()) < 1e-3
    assert float((got["std"] / ref["std"] - 1).abs().max()) < 1e-3


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_bf16_accumulates_and_communicates_gradients_in_fp32(stage):
    cfg = load_config(overrides=["deepspeed.precision=bf16", f"deepspeed.zero_stage={stage}"])
    ds = make_ds_config(cfg, world_size=2)
    assert ds["bf16"]["enabled"] and ds["data_types"] == {"grad_accum_dtype": "fp32"}
    assert ds["communication_data_type"] == "fp32"
    fp32 = make_ds_config(load_config(overrides=[f"deepspeed.zero_stage={stage}"]), 2)
    assert "data_types" not in fp32 and "communication_data_type" not in fp32


def test_zero0_bf16_with_accumulation_is_refused_naming_the_keys():
    with pytest.raises(ConfigError, match="'train.grad_accum'.*zero_stage=1"):
        load_config(overrides=["deepspeed.precision=bf16", "deepspeed.zero_stage=0",
                               "train.grad_accum=2"])
    load_config(overrides=["deepspeed.precision=bf16", "deepspeed.zero_stage=0"])


def test_per_sample_normalisation_is_refused_in_pretraining():
    with pytest.raises(ConfigError, match="'data.views.normalize.mode'.*visible patches"):
        load_config(overrides=["data.views.normalize.mode=per_sample"])
    load_config(overrides=["data.views.normalize.mode=affine"])


def test_deterministic_flag_switches_torch_to_deterministic_kernels(monkeypatch):
    from specaware.training.determinism import make_deterministic
    assert load_config(overrides=["train.deterministic=true"]).train.deterministic
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        make_deterministic()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        import os
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
        torch.backends.cudnn.deterministic = False


def test_zero0_bf16_export_writes_the_fp32_masters(base_items, tmp_path):
    """A plain bf16 ZeRO-0 run (DeepSpeed's FP16_UnfusedOptimizer holds fp32 masters, the
    module bf16 weights): export writes the masters, not the bf16 weights widened."""
    from safetensors.torch import load_file
    run_dir = tmp_path / "run"
    items = [*base_items, "train.steps=2", "checkpoint.every=2", "deepspeed.zero_stage=0",
             "deepspeed.precision=bf16", "train.deterministic=true"]
    result = launch(run_dir, items, launcher="plain").check()
    assert "train.deterministic: deterministic algorithms on" in result.output
    ckpt = run_dir / "checkpoints" / checkpoint.step_name(2)
    names = checkpoint.read_state(ckpt)["fp32_master_names"]
    saved = torch.load(ckpt / checkpoint.DS_TAG / "mp_rank_00_model_states.pt",
                       map_location="cpu", weights_only=False)   # our own file: trusted
    masters = dict(zip(sum(names, []), sum(saved["optimizer"]["fp32_groups"], [])))
    out = tmp_path / "export.safetensors"
    cmd = [str(Path(sys.executable).parent / "specaware"), "export", str(run_dir), str(out)]
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = load_file(str(out))
    assert set(masters) <= set(exported)
    for name, master in masters.items():
        assert exported[name].dtype == torch.float32
        assert torch.equal(exported[name].reshape(-1), master.reshape(-1)), name
    widened = [n for n, t in exported.items() if torch.equal(t, t.bfloat16().float())]
    assert len(widened) < len(masters) / 2         # most weights carry more than bf16's bits


def test_zero1_bf16_export_joins_the_ranks_fp32_masters(base_items, tmp_path):
    """bf16 at ZeRO 1 with fp32 accumulation (DeepSpeed's BF16_Optimizer, 2 ranks): export
    joins each rank's slice of the fp32 masters; every exported weight rounds to the bf16
    weight the module holds, and most carry more bits than bf16."""
    from safetensors.torch import load_file
    run_dir = tmp_path / "run"
    items = [*base_items, "train.steps=2", "checkpoint.every=2", "deepspeed.zero_stage=1",
             "deepspeed.precision=bf16", "train.grad_accum=2"]
    launch(run_dir, items).check()
    ckpt = run_dir / "checkpoints" / checkpoint.step_name(2)
    assert len(list((ckpt / checkpoint.DS_TAG).glob("bf16_zero_pp_rank_*"))) == 2
    out = tmp_path / "export.safetensors"
    cmd = [str(Path(sys.executable).parent / "specaware"), "export", str(run_dir), str(out)]
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = load_file(str(out))
    module = torch.load(ckpt / checkpoint.DS_TAG / "mp_rank_00_model_states.pt",
                        map_location="cpu", weights_only=False)["module"]  # ours: trusted
    for name, weight in module.items():
        assert weight.dtype == torch.bfloat16
        got = exported[name].reshape(weight.shape)
        assert torch.equal(got.bfloat16(), weight), name
    widened = [n for n, t in exported.items() if torch.equal(t, t.bfloat16().float())]
    assert len(widened) < len(module) / 2

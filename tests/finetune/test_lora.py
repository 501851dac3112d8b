"""LoRA (finetune/lora.py): adapters on attention, dense MLP and Soft-MoE expert weights; the
encoder frozen; adapter checkpoints that hold only adapters + head and point to the base."""
import json
from pathlib import Path

import pytest
import torch
from fixtures import sample, write_export, write_segmentation_pair
from safetensors.torch import load_file

from specaware.config import build
from specaware.finetune import api
from specaware.finetune.checkpoint import build_head, load_finetuned
from specaware.finetune.config import FinetuneConfig, ModelConfig
from specaware.data.collate import collate
from specaware.finetune.lora import apply_lora, count_parameters, merge
from specaware.finetune.runner import run

ROOT = Path(__file__).parents[2]


def _encoder():
    torch.manual_seed(0)
    return api.build_encoder(None, "specaware_debug")


def _batch():
    return collate([sample(seed=i, h=16, w=16) for i in range(2)])


def test_adapters_start_at_zero_so_the_encoder_computes_the_same_function():
    encoder = _encoder().eval()
    before = encoder.forward_features(_batch())
    apply_lora(encoder, rank=4)
    torch.testing.assert_close(encoder.forward_features(_batch()), before)


def test_adapters_cover_attention_dense_mlp_and_every_expert():
    encoder = _encoder()
    adapted = apply_lora(encoder, rank=4, alpha=8)
    names = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert names and all(n.endswith((".A", ".B")) for n in names)
    assert any(".attn.qkv." in n for n in names) and any(".attn.proj." in n for n in names)
    assert any(".fc1." in n for n in names)                       # block 0: dense MLP
    from moe import MLPExperts
    bank = next(m for m in encoder.modules() if isinstance(m, MLPExperts))
    a = bank.parametrizations.w1[0].A
    assert a.shape == (bank.num_experts, bank.dim, 4)            # one adapter per expert
    assert adapted == 2 * 2 + 2 + 2                  # qkv+proj x 2 blocks, fc1/2, w1/2
    assert not any(n.startswith("conditioning.") for n in names)


def test_training_moves_only_the_adapters_and_merge_keeps_the_function():
    encoder = _encoder()
    apply_lora(encoder, rank=4)
    frozen = {n: p.detach().clone() for n, p in encoder.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        encoder.forward_features(_batch()).pow(2).mean().backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in encoder.named_parameters() if n in frozen)
    encoder.eval()
    adapted = encoder.forward_features(_batch())
    merged = merge(encoder)
    assert not any(".parametrizations." in k for k in merged.state_dict())
    assert set(merged.state_dict()) == set(_encoder().state_dict())
    torch.testing.assert_close(merged.forward_features(_batch()), adapted, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(adapted, _encoder().eval().forward_features(_batch()))


def test_lora_trains_far_fewer_parameters_than_the_whole_encoder():
    full = build_head("classification", _encoder(), 3, ModelConfig(freeze="none"))
    lora = build_head("classification", _encoder(), 3, ModelConfig(freeze="lora"))
    probe = build_head("classification", _encoder(), 3, ModelConfig(freeze="encoder"))
    n_full, n_lora, n_probe = (count_parameters(m)["trainable"] for m in (full, lora, probe))
    assert n_probe < n_lora < n_full / 3


def test_unknown_target_and_bad_rank_are_refused():
    with pytest.raises(ValueError, match="targets \\['ffn'\\]"):
        apply_lora(_encoder(), targets=("ffn",))
    with pytest.raises(ValueError, match="rank=0"):
        apply_lora(_encoder(), rank=0)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    image, mask = write_segmentation_pair(folder, h=48, w=48)
    export, _ = write_export(folder)
    out = folder / "run"
    cfg = build(FinetuneConfig, [ROOT / "configs" / "finetune" / "segmentation.yaml"],
                [f"data.images=[{image}]", f"data.masks=[{mask}]", f"model.checkpoint={export}",
                 f"out={out}", "model.freeze=lora", "model.lora.rank=2", "optim.epochs=2",
                 "optim.batch_size=2", "model.decoder_width=16", "protocol.seeds=[0]",
                 "protocol.tile=16", "protocol.val_fraction=0.25",
                 "protocol.test_fraction=0.25", "progress=false"])
    run(cfg)
    return {"best": out / "pretrained/seed0/best.safetensors", "export": export,
            "image": image}


def test_lora_checkpoint_holds_adapters_and_head_and_points_to_the_base(lora_run):
    state = load_file(str(lora_run["best"]))
    encoder_keys = [k for k in state if k.startswith("encoder.")]
    assert encoder_keys and all(k.endswith((".A", ".B")) for k in encoder_keys)
    assert any(k.startswith("decoder.") for k in state)
    meta = json.loads(lora_run["best"].with_suffix(".json").read_text())
    assert meta["adapters_only"] is True
    assert Path(meta["encoder"]["pretrained_from"]) == lora_run["export"]
    assert len(meta["encoder"]["base_sha256"]) == 64
    base_bytes = lora_run["export"].stat().st_size
    assert lora_run["best"].stat().st_size < base_bytes / 3


def test_lora_checkpoint_reloads_onto_its_base(lora_run):
    model, meta = load_finetuned(lora_run["best"])
    state = load_file(str(lora_run["best"]))
    got = model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    base = load_file(str(lora_run["export"]))
    key = next(k for k in got if k.endswith("qkv.parametrizations.weight.original"))
    assert torch.equal(got[key], base[key.replace(".parametrizations.weight.original",
                                                  ".weight")])


def test_lora_checkpoint_without_its_base_or_with_a_changed_base_is_refused(lora_run, tmp_path):
    meta = json.loads(lora_run["best"].with_suffix(".json").read_text())
    moved = tmp_path / "best.safetensors"
    moved.write_bytes(lora_run["best"].read_bytes())
    gone = {**meta, "encoder": {**meta["encoder"], "pretrained_from": str(tmp_path / "x.json")}}
    moved.with_suffix(".json").write_text(json.dumps(gone))
    with pytest.raises(api.CheckpointError, match="LoRA adapters for the base encoder"):
        load_finetuned(moved)
    changed = {**meta, "encoder": {**meta["encoder"], "base_sha256": "0" * 64}}
    moved.with_suffix(".json").write_text(json.dumps(changed))
    with pytest.raises(api.CheckpointError, match="changed since the adapters were trained"):
        load_finetuned(moved)

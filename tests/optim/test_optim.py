"""The one optimisation toolkit: parameter groups of every registered variant and of each
fine-tuning head, and the warmup-cosine schedule both halves step through."""
import math

import pytest
import torch
from torch import nn

import specaware
from specaware.finetune.checkpoint import build_head
from specaware.finetune.config import ModelConfig
from specaware.optim.groups import param_groups
from specaware.optim.schedule import lr_at, make_scheduler

# parameters that are matrices mixing features, and may decay: Linear weights, the experts'
# banks and the hypernetworks' bases
MATRIX_LEAVES = {"w1", "w2", "w_in", "w_out", "u_basis", "b_basis"}


def _groups(model, **kw):
    return {g["name"]: g for g in param_groups(model, lr=1e-3, weight_decay=0.05, **kw)}


def _decays_only_matrices(model: nn.Module, decay: list[str]) -> None:
    modules = dict(model.named_modules())
    for name in decay:
        owner, _, leaf = name.rpartition(".")
        linear = isinstance(modules[owner], (nn.Linear, nn.Conv2d)) and leaf == "weight"
        assert linear or leaf in MATRIX_LEAVES, f"{name} should not decay"


@pytest.mark.parametrize("variant", specaware.list_models())
def test_every_variant_exempts_biases_norms_tables_and_router_weights(variant):
    with torch.device("meta"):     # no weights allocated: specaware_large is free
        model = specaware.create_model(variant)
    groups = _groups(model)
    assert list(groups) == ["decay", "no_decay"]
    assert (groups["decay"]["weight_decay"], groups["no_decay"]["weight_decay"]) == (0.05, 0.0)
    decay, keep = groups["decay"]["names"], groups["no_decay"]["names"]
    assert sorted(decay + keep) == sorted(n for n, _ in model.named_parameters())
    _decays_only_matrices(model, decay)
    modules = dict(model.named_modules())
    exempt = {n for n, _ in model.named_parameters()
              if isinstance(modules[n.rpartition(".")[0]], (nn.LayerNorm, nn.Embedding))
              or n.rsplit(".", 1)[-1] in {"bias", "b1", "b2", "phi", "scale", "mask_token"}}
    assert exempt <= set(keep)
    for must in ("conditioning.sensor_table.weight", "conditioning.level_table.weight",
                 "mlp.experts.b1", "mlp.experts.b2", "mlp.router.phi"):
        assert any(n.endswith(must) for n in keep), must


@pytest.mark.parametrize("task", ["classification", "segmentation", "change"])
@pytest.mark.parametrize("freeze", ["frozen", "partial", "full"])
def test_each_head_trains_its_encoder_at_the_encoder_lr(task, freeze):
    encoder = specaware.create_model("specaware_debug").encoder
    head = build_head(task, encoder, 3, ModelConfig(freeze=freeze, decoder_width=8))
    groups = param_groups(head, lr=1e-3, weight_decay=0.05, encoder_lr=1e-4)
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert sorted(n for g in groups for n in g["names"]) == sorted(trainable)
    for g in groups:
        in_encoder = g["name"].startswith("encoder_")
        assert g["lr"] == (1e-4 if in_encoder else 1e-3)
        assert all(n.startswith("encoder.") == in_encoder for n in g["names"])
        assert g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 0.05)
    names = [g["name"] for g in groups]
    assert ("encoder_decay" in names) == (freeze != "frozen") and "head_decay" in names
    decay = [n for g in groups if g["name"].endswith("_decay") and "no_decay" not in g["name"]
             for n in g["names"]]
    _decays_only_matrices(head, decay)


def test_frozen_parameters_are_in_no_group():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model[0].weight.requires_grad_(False)
    groups = _groups(model)
    assert groups["no_decay"]["names"] == ["0.bias", "1.weight", "1.bias"]
    assert "decay" not in groups


def test_schedule_warms_up_linearly_then_follows_the_cosine_to_the_floor():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 2.0}, {"params": [], "lr": 0.5}])
    sched = make_scheduler(opt, total_steps=10, warmup_steps=4, peak=2.0, floor=0.0)
    seen = []
    for _ in range(12):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [s[0] for s in seen[:4]] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert seen[7][0] == pytest.approx(1.0 + math.cos(math.pi * 3 / 6))   # floor 0, peak 2
    assert seen[7][1] == pytest.approx(seen[7][0] / 4)     # each group scaled by one curve
    assert seen[10][0] == seen[11][0] == 0.0
    assert lr_at(12, peak=1.0, floor=0.1, warmup=0, total=10) == pytest.approx(0.1)

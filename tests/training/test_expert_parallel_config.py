"""`deepspeed.expert_parallel`: what is refused before any process starts, and the optimizer
groups DeepSpeed's ZeRO needs (issue 19). The runs themselves: test_expert_parallel_training.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from specaware.config import ConfigError
from specaware.training.config import load_config
from specaware.training.expert_parallel import (check_ds_config, check_resume, check_world,
                                                split_param_groups)
from tests.training.launching import DEBUG_YAML


@pytest.mark.parametrize("items, message", [
    (["deepspeed.expert_parallel=3"],
     "3 must divide every Soft-MoE layer's expert count (encoder.blocks.1.mlp has 4)"),
    (["deepspeed.expert_parallel=2", "deepspeed.zero_stage=3"],
     "2 needs deepspeed.zero_stage 1 or 2, got 3: ZeRO-3 partitions"),
    (["deepspeed.expert_parallel=2", "deepspeed.zero_stage=0"],
     "got 0: ZeRO-0 clips gradients by the mean of per-rank norms"),
    (["deepspeed.expert_parallel=0"], "must be >= 1"),
    (["deepspeed.expert_parallel=2", "model.overrides.moe.blocks=[]"],
     "the model has no Soft-MoE layer to split"),
])
def test_impossible_settings_are_one_line_errors_naming_the_key(items, message):
    with pytest.raises(ConfigError) as err:
        load_config([DEBUG_YAML], items)
    text = str(err.value)
    assert text.startswith("config key 'deepspeed.expert_parallel'") and message in text
    assert "\n" not in text


def test_a_valid_setting_passes_and_the_world_size_is_checked_at_launch():
    cfg = load_config([DEBUG_YAML], ["deepspeed.expert_parallel=2", "deepspeed.zero_stage=2"])
    assert cfg.deepspeed.expert_parallel == 2
    check_world(2, 4)
    with pytest.raises(ConfigError, match="must divide the number of processes \\(3\\)"):
        check_world(2, 3)


def test_expert_weights_get_groups_of_their_own_with_the_same_hyperparameters():
    dense, bias, expert, expert_bias = (nn.Parameter(torch.zeros(s)) for s in
                                        ((3, 3), (3,), (2, 3, 3), (2, 3)))
    for p in (expert, expert_bias):
        p.allreduce, p.group_name = False, "ep_size_2"
    groups = [{"params": [dense, expert], "weight_decay": 0.05, "names": ["w", "experts.w1"]},
              {"params": [bias, expert_bias], "weight_decay": 0.0, "names": ["b", "experts.b1"]}]
    out = split_param_groups(groups)
    assert [(g["names"], g["weight_decay"], g.get("moe", False), g.get("name")) for g in out] == [
        (["w"], 0.05, False, None), (["experts.w1"], 0.05, True, "ep_size_2"),
        (["b"], 0.0, False, None), (["experts.b1"], 0.0, True, "ep_size_2")]
    assert out[1]["params"][0] is expert and out[3]["params"][0] is expert_bias
    # without expert weights nothing changes (N = 1)
    plain = [{"params": [dense], "weight_decay": 0.05, "names": ["w"]}]
    assert split_param_groups(plain) == plain


def test_a_checkpoint_resumes_only_with_the_split_it_was_written_with():
    state = {"config": {"deepspeed": {"expert_parallel": 2}}}
    check_resume(state, 2, "runs/x/step_00000006")
    with pytest.raises(ConfigError, match="written with deepspeed.expert_parallel=2, this run "
                                          "has 1; resume with deepspeed.expert_parallel=2"):
        check_resume(state, 1, "runs/x/step_00000006")
    with pytest.raises(ConfigError, match="=1, this run has 2"):
        check_resume({"config": {"deepspeed": {}}}, 2, "old")   # before the setting existed


def test_a_preset_without_reduce_scatter_is_refused_with_experts_split():
    ds = {"zero_optimization": {"stage": 1, "reduce_scatter": False}}
    check_ds_config(1, ds)                              # N = 1: DeepSpeed's default paths
    check_ds_config(2, {"zero_optimization": {"stage": 2, "reduce_scatter": True}})
    with pytest.raises(ConfigError, match="remove 'reduce_scatter: false' from deepspeed.preset"):
        check_ds_config(2, ds)

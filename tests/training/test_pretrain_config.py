"""The pretraining config: unknown keys and wrong types fail naming the key, presets cannot
contradict the typed config, and the DeepSpeed dict follows from it."""
from __future__ import annotations

import argparse

import pytest
import yaml

from specaware.cli import pretrain as cli
from specaware.config import ConfigError, split_items
from specaware.training.config import load_config
from specaware.training.ds_config import make_ds_config
from specaware.training.trainer import PRESET_DIR
from specaware.testing import write_tiny_shards
from tests.training.launching import DEBUG_YAML, REPO


def run_cli(capsys, *items: str, print_config: bool = False) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([*items] + (["--print-config"] if print_config else []))
    rc = cli.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_unknown_override_key_fails_naming_the_key(capsys):
    rc, _, err = run_cli(capsys, DEBUG_YAML, "train.stepz=5")
    assert rc == 2
    assert "unknown config key 'train.stepz'" in err and "Did you mean 'train.steps'" in err


def test_unknown_key_in_a_yaml_file_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1.0e-3\n  warmup: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'optim\.warmup'"):
        load_config([DEBUG_YAML, str(bad)])


@pytest.mark.parametrize("override, key", [
    ("train.steps=ten", "train.steps"),
    ("optim.lr=fast", "optim.lr"),
    ("deepspeed.precision=fp16", "deepspeed.precision"),
    ("wandb.mode=cloud", "wandb.mode"),
])
def test_wrong_type_or_value_fails_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config([DEBUG_YAML], [override])


@pytest.mark.parametrize("override, key", [
    ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
    ("optim.min_lr=1.0", "optim.min_lr"),
    ("model.mask_ratio=1.0", "model.mask_ratio"),
    ("model.name=specaware_huge", "model.name"),
    ("model.overrides.loss.target_norm=bands", "model.overrides.loss.target_norm"),
    ("model.overrides.decoder.depthh=2", "model.overrides.decoder.depthh"),
])
def test_out_of_range_values_and_unknown_view_keys_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([DEBUG_YAML], [override])


def test_view_keys_are_typed_one_override_changes_one_field():
    small = str(REPO / "configs" / "pretrain" / "small.yaml")
    cfg = load_config([small], ["data.views.crop=64"])
    assert cfg.data.views.crop == 64
    assert cfg.data.views.input_sensors == ["sentinel-2a", "landsat-8", "enmap", "emit"]
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.views\.crop_size'"):
        load_config([small], ["data.views.crop_size=8"])
    # debug.yaml has no views: the override builds them from the ViewConfig defaults
    assert load_config([DEBUG_YAML], ["data.views.crop=16"]).data.views.crop == 16
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.views\.crop_size'"):
        load_config([DEBUG_YAML], ["data.views.crop_size=8"])


def test_training_without_shards_says_how_to_get_some(capsys):
    rc, _, err = run_cli(capsys, DEBUG_YAML, "train.steps=1")
    assert rc == 2 and "data.shards" in err and "specaware synth" in err


def test_print_config_shows_resolved_config_and_deepspeed_dict_as_comments(capsys):
    rc, out, _ = run_cli(capsys, DEBUG_YAML, "deepspeed.zero_stage=3", "data.batch_size=3",
                         "train.grad_accum=2", print_config=True)
    assert rc == 0
    shown = yaml.safe_load(out)                   # the config itself; the DeepSpeed dict is
    assert shown["deepspeed"]["zero_stage"] == 3  # the commented block that follows it
    block = out.split("# deepspeed (world size 1)", 1)[1].split("\n", 1)[1]
    ds = yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 6          # world size 1 outside a launcher


def test_every_shipped_config_and_preset_resolves():
    for yaml in sorted((REPO / "configs" / "pretrain").glob("*.yaml")):
        cfg = load_config([yaml], ["data.shards=/data"])
        ds = make_ds_config(cfg, world_size=8, preset_dir=PRESET_DIR)
        assert ds["train_batch_size"] == cfg.data.batch_size * cfg.train.grad_accum * 8
    for stage, preset in [(1, "zero1"), (2, "zero2"), (3, "zero3"), (3, "zero3_offload")]:
        cfg = load_config([DEBUG_YAML], [f"deepspeed.zero_stage={stage}",
                                         f"deepspeed.preset={preset}"])
        assert make_ds_config(cfg, 2, PRESET_DIR)["zero_optimization"]["stage"] == stage


def test_preset_that_contradicts_the_config_is_rejected_naming_both():
    cfg = load_config([DEBUG_YAML], ["deepspeed.zero_stage=1", "deepspeed.preset=zero3"])
    with pytest.raises(ConfigError, match=r"zero3\.yaml.*zero_optimization\.stage.*deepspeed\.zero_stage"):
        make_ds_config(cfg, 2, PRESET_DIR)
    cfg = load_config([DEBUG_YAML], ["deepspeed.preset=nonesuch"])
    with pytest.raises(ConfigError, match="deepspeed.preset"):
        make_ds_config(cfg, 2, PRESET_DIR)


def test_deepspeed_launcher_local_rank_argument_is_accepted():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--local_rank=1", DEBUG_YAML, "train.steps=2"])
    assert args.local_rank == 1 and split_items(args.items) == ([DEBUG_YAML], ["train.steps=2"])


def test_missing_shards_fail_before_any_set_up_naming_the_key(capsys, tmp_path):
    """A wrong data.shards is one line naming the key, the missing files and the fix, before
    DeepSpeed or the model start (no traceback on every rank)."""
    pattern = str(tmp_path / "train-{000..002}.tar")
    rc, _, err = run_cli(capsys, DEBUG_YAML, f"data.shards={pattern}")
    assert rc == 2 and "Traceback" not in err
    assert "config key 'data.shards'" in err and "3 of 3 shard(s) not found" in err
    assert "train-000.tar" in err and "specaware shard" in err

    rc, _, err = run_cli(capsys, DEBUG_YAML, f"data.shards={tmp_path}")   # no manifest.json
    assert rc == 2 and "config key 'data.shards'" in err and "manifest.json not found" in err


def test_a_shard_missing_from_its_manifest_is_named(capsys, tmp_path):
    manifest = write_tiny_shards(tmp_path, num_shards=2, per_shard=1)
    lost = tmp_path / manifest["shards"][1]["name"]
    lost.unlink()
    rc, _, err = run_cli(capsys, DEBUG_YAML, f"data.shards={tmp_path}")
    assert rc == 2 and "1 of 2 shard(s) not found" in err and lost.name in err

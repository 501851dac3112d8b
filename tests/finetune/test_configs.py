"""Every shipped configs/finetune/*.yaml builds into a FinetuneConfig that the runner accepts."""
from pathlib import Path

import pytest

from specaware.config import ConfigError, build
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.datasets.mat import get_benchmark
from specaware import cli as specaware_cli
from specaware.finetune.runner import (PREPARE, TABLE_METRICS, _zero_is_unlabelled, check_inputs,
                                        check_split)

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "finetune").glob("*.yaml"))


def test_the_task_configs_and_benchmark_examples_ship():
    names = {p.stem for p in CONFIGS}
    assert {"classification", "segmentation", "change", "indian_pines", "pavia_university",
            "salinas", "houston2013", "houston2013_fixed", "whu_hi_longkou", "hermiston",
            "farmland", "river", "bay_area", "santa_barbara"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads(path):
    cfg = build(FinetuneConfig, [path], ["model.checkpoint=run/export.safetensors"])
    assert cfg.task in TABLE_METRICS and cfg.data.kind in PREPARE
    assert cfg.optim.epochs > 0 and cfg.protocol.seeds
    check_split(cfg)
    if cfg.data.kind == "mat":
        bench = get_benchmark(cfg.data.benchmark)
        assert bench.task == ("change" if cfg.task == "change" else "classification")
        assert cfg.data.image.endswith(".mat") and cfg.data.gt.endswith(".mat")
        if cfg.protocol.split == "random":
            assert (cfg.protocol.per_class is None) != (cfg.protocol.fraction is None)
        else:
            assert cfg.data.test_gt.endswith(".mat")
    if cfg.task == "change":
        assert cfg.optim.class_weight == "balanced"
    if cfg.task == "classification" and cfg.data.kind == "mat":
        assert cfg.model.pool == "center" and cfg.protocol.patch >= 16


def test_change_masks_keep_zero_as_no_change_unless_told_otherwise():
    change = build(FinetuneConfig, [], ["task=change"])
    assert _zero_is_unlabelled(change) is False
    assert _zero_is_unlabelled(build(FinetuneConfig, [], ["task=segmentation"])) is True
    forced = build(FinetuneConfig, [], ["task=change", "data.zero_is_unlabelled=true"])
    assert _zero_is_unlabelled(forced) is True


def test_unknown_key_in_a_config_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\nprotocol:\n  patches: 24\n")
    with pytest.raises(ConfigError, match="patches"):
        build(FinetuneConfig, [bad])


CLASSIFICATION = Path(__file__).parents[2] / "configs" / "finetune" / "classification.yaml"


def _cfg(*overrides: str) -> FinetuneConfig:
    return build(FinetuneConfig, [CLASSIFICATION], list(overrides))


def test_inputs_are_checked_before_any_model_is_built(tmp_path):
    """Each data.kind's required keys, every named file and the checkpoint are checked up
    front; the error names the config key and the path."""
    with pytest.raises(ConfigError, match=r"data.kind=tiles .* needs config key\(s\) data.root"):
        check_inputs(_cfg("model.init=random"))
    with pytest.raises(ConfigError, match=r"'data.root': .*nowhere not found"):
        check_inputs(_cfg("model.init=random", f"data.root={tmp_path / 'nowhere'}"))
    with pytest.raises(ConfigError, match="data.images2"):
        check_inputs(_cfg("task=change", "data.kind=geotiff", "data.images=[a.tif]",
                          "data.masks=[b.tif]", "model.init=random"))
    with pytest.raises(ConfigError, match=r"'data.masks': .*b.tif not found"):
        (tmp_path / "a.tif").touch()
        check_inputs(_cfg("task=segmentation", "data.kind=geotiff", "model.init=random",
                          f"data.images=[{tmp_path / 'a.tif'}]", f"data.masks=[{tmp_path / 'b.tif'}]"))
    with pytest.raises(ConfigError, match=r"'data.train_shards' .* 2 of 2 shard\(s\) not found"):
        check_inputs(_cfg("data.kind=shards", "data.num_classes=3", "model.init=random",
                          f"data.train_shards={tmp_path}/s-{{0..1}}.tar",
                          f"data.val_shards={tmp_path}/s-{{0..1}}.tar"))
    with pytest.raises(ConfigError, match="model.init=pretrained needs config key 'model.checkpoint'"):
        check_inputs(_cfg(f"data.root={tmp_path}"))
    with pytest.raises(ConfigError, match=r"'model.checkpoint': .*gone.safetensors not found"):
        check_inputs(_cfg(f"data.root={tmp_path}", f"model.checkpoint={tmp_path / 'gone.safetensors'}"))
    check_inputs(_cfg(f"data.root={tmp_path}", "model.init=random"))   # all there: passes


def test_cli_takes_config_files_positionally_and_reports_bad_inputs_in_one_line(capsys, tmp_path):
    """`specaware finetune CONFIG.yaml --flag key=value` as with pretrain: files and overrides on
    either side of the flags; a missing input is one error line, exit code 2."""
    rc = specaware_cli.main(["finetune", str(CLASSIFICATION), "--init", "random",
                             f"data.root={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "config error: config key 'data.root'" in err and "nowhere not found" in err

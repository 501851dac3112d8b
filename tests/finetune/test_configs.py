"""Every shipped configs/finetune/*.yaml builds into a FinetuneConfig that the runner accepts."""
from pathlib import Path

import pytest

from specaware.config import ConfigError, build
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.datasets.mat import get_benchmark
from specaware.finetune.runner import PREPARE, TABLE_METRICS, _zero_is_unlabelled, check_split

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

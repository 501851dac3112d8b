"""`data.curation` reaches the train stream: balanced strata are drawn equally often, bad
settings fail naming the key before any process group starts."""
from __future__ import annotations

from collections import Counter

import pytest

from specaware.config import ConfigError
from specaware.training.config import load_config
from specaware.training.distributed import DistEnv
from specaware.training.trainer import make_data
from specaware.testing import write_tiny_shards
from tests.training.launching import DEBUG_YAML

ENV = DistEnv(rank=0, world_size=1, local_rank=0, master_addr="127.0.0.1", master_port=0,
              launcher="single")


@pytest.fixture(scope="module")
def skewed_shards(tmp_path_factory):
    """12 AVIRIS-NG tiles and 4 Sentinel-2A tiles (natural share of S2: 25 %)."""
    out = tmp_path_factory.mktemp("skewed")
    write_tiny_shards(out, sensors=("aviris-ng", "aviris-ng", "aviris-ng", "sentinel-2a"),
                      tile=16, num_shards=4, per_shard=4, overwrite=True)
    return out


def sensor_share(cfg, draws: int = 400) -> float:
    counts: Counter = Counter()
    for batch in make_data(cfg, ENV, start_step=0):
        counts.update(batch["sensor"])
        if sum(counts.values()) >= draws:
            break
    return counts["sentinel-2a"] / sum(counts.values())


def config(shards, *overrides):
    return load_config([DEBUG_YAML], [f"data.shards={shards}", "data.num_workers=0",
                                      "data.shuffle_buffer=8", *overrides])


def test_balancing_by_sensor_draws_each_sensor_half_the_time(skewed_shards):
    natural = sensor_share(config(skewed_shards))
    balanced = sensor_share(config(skewed_shards, "data.curation.balance=[sensor]"))
    assert abs(natural - 0.25) < 0.08, natural
    assert abs(balanced - 0.5) < 0.08, balanced


def test_curation_without_the_descriptor_fails_naming_the_key(skewed_shards):
    cfg = config(skewed_shards, "data.curation.min_entropy=2.0")
    with pytest.raises(ConfigError, match=r"data\.curation.*entropy"):
        make_data(cfg, ENV, start_step=0)


def test_curation_needs_a_shard_folder(skewed_shards):
    cfg = config(f"{skewed_shards}/shard-000000.tar", "data.curation.balance=[sensor]")
    with pytest.raises(ConfigError, match="manifest.json"):
        make_data(cfg, ENV, start_step=0)


@pytest.mark.parametrize("override", ["data.curation.drop_quantile=1.5",
                                      "data.curation.max_oversample=0.5",
                                      "data.curation.balanse=[sensor]"])
def test_bad_curation_values_are_rejected_naming_the_key(override):
    key = override.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=key):
        load_config([DEBUG_YAML], [override])


def test_keys_file_of_specaware_curate_limits_the_stream(skewed_shards, tmp_path):
    """data.curation.keys_file: the train stream draws only the tiles KEYS.json keeps."""
    import json

    from specaware.data.prune import prune_shards
    out = tmp_path / "keys.json"
    kept = set(prune_shards(skewed_shards, out, fraction=0.5, clusters=2)["keys"])
    assert len(kept) == 8
    seen, draws = set(), 0
    for batch in make_data(config(skewed_shards, f"data.curation.keys_file={out}"), ENV, 0):
        seen.update(str(m["key"]) for m in batch["meta"])
        draws += len(batch["meta"])
        if draws >= 48:
            break
    assert seen and seen <= kept and json.loads(out.read_text())["report"]["kept"] == 8

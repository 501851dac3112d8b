"""`specaware inspect`: counts per sensor, band counts, invalid fraction, keys; damage reported."""
import json

from specaware.cli import main as cli_main
from specaware.data.inspect import summarise
from specaware.testing import corrupt_shard, write_tiny_shards


def test_summary_counts_sensors_bands_strata_and_invalid_fraction(tmp_path):
    manifest = write_tiny_shards(tmp_path, invalid_fraction=0.1, num_shards=2, per_shard=3)
    s = summarise(tmp_path, keys=2)
    assert s["total"] == 6 and s["band_counts"] == {"24": 3, "13": 3}
    assert [(x["count"], x["found"]) for x in s["shards"]] == [(3, 3), (3, 3)]
    assert s["keys"] == [t["key"] for t in manifest["tiles"][:2]]
    assert s["strata"]["landcover"] == {"water": 2, "vegetation": 2, "bare": 2}
    d = s["decoded"]
    assert d["decoded"] == 6 and d["broken"] == []
    assert 0.05 < d["invalid_fraction_mean"] < 0.15  # signal bands only
    assert d["flagged_band_fraction_mean"] > 0  # absorption bands of the AVIRIS-NG tiles


def test_cli_prints_summary_and_json(tmp_path, capsys):
    write_tiny_shards(tmp_path)
    assert cli_main(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "8 tiles in 2 shards (tile 16, float16)" in text
    assert "aviris-ng" in text and "bands [24]" in text and "sample keys: tiny-aviris-ng" in text
    assert cli_main(["inspect", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sensors"]["sentinel-2a"]["count"] == 4


def test_damaged_shards_are_reported_with_exit_code_1(tmp_path, capsys):
    manifest = write_tiny_shards(tmp_path)
    corrupt_shard(tmp_path / manifest["shards"][0]["name"], "truncate")
    corrupt_shard(tmp_path / manifest["shards"][1]["name"], "garble", member=1)
    assert cli_main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "problem: shard-000000.tar" in err
    assert "problem: sample 'tiny-aviris-ng_r000064_c000000'" in err


def test_missing_manifest_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["inspect", str(tmp_path)]) == 2
    assert "not a finished shard set" in capsys.readouterr().err

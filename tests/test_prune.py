"""Training-free pruning (data/prune.py, `specaware curate`): the requested fraction, every
cluster kept, near-duplicates first to go, deterministic for a seed, read by pretraining."""
import argparse
import json

import numpy as np
import pytest

from specaware.cli import curate as cli
from specaware.data.curate import CurationError
from specaware.data.prune import prune, quotas, restrict_to_keys_file
from specaware.testing import write_tiny_shards


def _rows_and_features(seed=0):
    """A big cluster of near-duplicates (40), a medium one (15) and a rare one (3)."""
    rng = np.random.default_rng(seed)
    centres = {"big": 0.0, "mid": 10.0, "rare": 20.0}
    sizes = {"big": 40, "mid": 15, "rare": 3}
    rows, feats = [], {}
    for name, n in sizes.items():
        for i in range(n):
            key = f"{name}{i:02d}"
            rows.append({"key": key, "descriptors": {"entropy": float(rng.uniform(3, 6))}})
            feats[key] = centres[name] + rng.normal(0, 0.01 if name == "big" else 1.0, 4)
    return rows, feats


def test_prune_keeps_fraction_every_cluster_and_is_deterministic():
    rows, feats = _rows_and_features()
    a = prune(rows, feats, fraction=0.5, clusters=3, seed=1)
    assert len(a["keys"]) == round(0.5 * len(rows))
    assert {c["kept"] > 0 for c in a["report"]["clusters"]} == {True}
    assert all(f"rare{i:02d}" in a["keys"] for i in range(3))    # the rare scene survives
    big_kept = sum(k.startswith("big") for k in a["keys"])
    assert big_kept < 0.5 * 40                                    # duplicates went first
    assert prune(rows, feats, fraction=0.5, clusters=3, seed=1) == a


def test_prune_entropy_filter_comes_first_and_counts():
    rows, feats = _rows_and_features()
    out = prune(rows, feats, fraction=0.3, clusters=3, seed=0, drop_quantile=0.1)
    assert out["report"]["removed_low_entropy"] == round(0.1 * len(rows))
    lowest = min(rows, key=lambda r: r["descriptors"]["entropy"])["key"]
    assert lowest not in out["keys"] and len(out["keys"]) == round(0.3 * len(rows))


def test_quotas_water_fill_and_refuse_to_lose_a_cluster():
    assert quotas(np.array([40, 15, 3]), 29).tolist() == [13, 13, 3]
    with pytest.raises(CurationError, match="cannot keep all 3 clusters"):
        quotas(np.array([5, 5, 5]), 2)


def test_curate_command_writes_keys_read_by_pretraining(tmp_path, capsys):
    write_tiny_shards(tmp_path / "shards", num_shards=2, per_shard=6, tile=8)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "keys.json"
    argv = [str(tmp_path / "shards"), "--out", str(out), "--fraction", "0.5", "--clusters", "3"]
    assert cli.main(parser.parse_args(argv)) == 0
    result = json.loads(out.read_text())
    assert len(result["keys"]) == 6 and len(result["report"]["clusters"]) == 3
    assert "kept 6 of 12 tiles" in capsys.readouterr().out
    keys, weights = restrict_to_keys_file(out, None, None)
    assert keys == result["keys"] and weights is None
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(CurationError, match="bad.json.*specaware curate"):
        restrict_to_keys_file(tmp_path / "bad.json", None, None)

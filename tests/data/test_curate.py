"""Curation (CSMoE-style balancing over descriptor strata, entropy pruning): balanced draws
through the real loader on a skewed shard set, the oversampling cap, flat tiles pruned by their
computed entropy, clear errors for unknown or continuous descriptors, and the inspect preview."""
import json
from collections import Counter

import numpy as np
import pytest

from specaware.cli import main as cli_main
from specaware.data.curate import CurationError, balanced_shares, curate, curation_for
from specaware.data.shard import shard_scenes
from specaware.data.stream import make_loader
from specaware.data.tiling import TilingOptions
from specaware.testing import sensor_bands, synthetic_cube, write_envi, write_tiny_shards

# 16 tiles, 4 per shard: 12 bare, 3 water, 1 snow. Rare strata sit in shards 0 and 2 only, which
# a per-worker shard partition would hand to one worker: the draw must still be balanced.
SKEW = ["snow", "bare", "bare", "bare"] + ["bare"] * 4 + ["water"] * 3 + ["bare"] + ["bare"] * 4


def _skewed(i):
    return {"landcover": SKEW[i], "climate_zone": "tropical" if i < 4 else "temperate",
            "entropy": 3.0}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    out = tmp_path_factory.mktemp("skewed")
    manifest = write_tiny_shards(out, num_shards=4, per_shard=4, tile=8, max_bands=12,
                                 descriptors=_skewed)
    return out, {row["key"]: row["descriptors"]["landcover"] for row in manifest["tiles"]}


def _drawn_landcover(out, landcover, weights, samples=800):
    loader = make_loader(out, mode="train", batch_size=8, num_workers=2, seed=3,
                         shuffle_buffer=16, weights=weights)
    stream, counts = iter(loader), Counter()
    while sum(counts.values()) < samples:
        counts.update(landcover[m["key"]] for m in next(stream)["meta"])
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def test_loader_draws_every_stratum_equally_often_on_a_skewed_set(skewed):
    out, landcover = skewed
    keys, weights = curation_for(out, balance=("landcover",))
    assert keys is None and len(weights) == 16  # nothing pruned, every tile weighted
    balanced = _drawn_landcover(out, landcover, weights)
    assert set(balanced) == {"bare", "water", "snow"}
    for stratum, freq in balanced.items():
        assert freq == pytest.approx(1 / 3, abs=0.07), (stratum, balanced)
    natural = _drawn_landcover(out, landcover, None, samples=400)
    assert natural["bare"] > 0.6  # without curation the common stratum dominates


def test_weights_give_equal_stratum_mass_and_mean_one(skewed):
    out, landcover = skewed
    _, weights = curation_for(out, balance=("landcover",))
    mass = Counter()
    for key, w in weights.items():
        mass[landcover[key]] += w
    assert np.mean(list(weights.values())) == pytest.approx(1.0)
    assert all(m == pytest.approx(16 / 3) for m in mass.values())
    snow = next(k for k, v in landcover.items() if v == "snow")
    assert weights[snow] == pytest.approx(16 / 3)  # 1 tile holding a third of the draws


def test_joint_strata_over_descriptors_and_sensor(skewed):
    out, _ = skewed
    from specaware.data.shard import read_manifest
    rows = read_manifest(out)["tiles"]
    report = curate(rows, balance=("landcover", "climate_zone", "sensor")).report
    joint = {tuple(s["stratum"].values()): s["kept"] for s in report["strata"]}
    expected = Counter((_skewed(i)["landcover"], _skewed(i)["climate_zone"], rows[i]["sensor"])
                       for i in range(16))
    assert joint == dict(expected)
    assert all(s["share"] == pytest.approx(1 / len(expected)) for s in report["strata"])


def test_tiny_strata_are_capped_and_the_rest_is_shared_equally():
    shares = balanced_shares([97, 2, 1], max_oversample=5.0)
    np.testing.assert_allclose(shares, [0.85, 0.10, 0.05])
    assert balanced_shares([50, 30, 20], max_oversample=10.0) == pytest.approx([1 / 3] * 3)
    np.testing.assert_allclose(balanced_shares([97, 2, 1], max_oversample=1.0),
                               [0.97, 0.02, 0.01])  # 1 = natural frequencies
    rows = [{"key": f"k{i}", "descriptors": {"lc": "a" if i < 97 else f"b{i}"}}
            for i in range(100)]
    report = curate(rows, balance=["lc"], max_oversample=5.0).report
    assert max(s["oversample"] for s in report["strata"]) <= 5.0 + 1e-9
    with pytest.raises(CurationError, match="max_oversample"):
        balanced_shares([1, 2], max_oversample=0.5)


@pytest.fixture(scope="module")
def flat_and_textured(tmp_path_factory):
    """A scene whose left half is one spectrum (+ sensor noise) and right half textured;
    sharded by the real pipeline, so entropy comes from descriptors.py."""
    tmp = tmp_path_factory.mktemp("entropy")
    wl, fwhm, _ = sensor_bands("aviris-ng", 30)
    cube = np.clip(synthetic_cube(wl, 32, 64, seed=3, noise=0.01), 0.001, None)
    flat = synthetic_cube(wl, 1, 1, seed=5, noise=0.0)
    cube[:, :, :32] = flat + np.random.default_rng(1).normal(0, 0.002, (len(wl), 32, 32))
    path = write_envi(tmp / "s.img", cube, wavelength=wl, fwhm=fwhm)
    manifest = shard_scenes([path], tmp / "out", options=TilingOptions(tile=16),
                            shard_size=3, progress=False)
    flat_keys = {t["key"] for t in manifest["tiles"] if int(t["key"].rsplit("_c", 1)[1]) < 32}
    return tmp / "out", flat_keys, {t["key"] for t in manifest["tiles"]} - flat_keys


@pytest.mark.parametrize("settings", [{"min_entropy": 2.5}, {"drop_quantile": 0.5}])
def test_entropy_pruning_drops_flat_tiles_and_keeps_textured(flat_and_textured, settings):
    out, flat, textured = flat_and_textured
    assert len(flat) == len(textured) == 4
    keys, weights = curation_for(out, **settings)
    assert weights is None and set(keys) == textured
    seen = [m["key"] for b in make_loader(out, mode="eval", batch_size=2, num_workers=0,
                                          keys=keys) for m in b["meta"]]
    assert sorted(seen) == sorted(textured)


def test_pruning_then_balancing_weights_only_kept_tiles(flat_and_textured):
    out, flat, textured = flat_and_textured
    keys, weights = curation_for(out, balance=["landcover"], drop_quantile=0.5)
    assert set(keys) == set(weights) == textured


def test_unknown_descriptor_fails_naming_it_and_the_available_ones(skewed):
    out, _ = skewed
    with pytest.raises(CurationError, match=r"unknown descriptor 'koppen'.*climate_zone.*"
                                            r"landcover"):
        curation_for(out, balance=("landcover", "koppen"))


def test_continuous_descriptors_need_bins_and_bins_make_quantile_strata():
    rows = [{"key": f"k{i}", "descriptors": {"mean_reflectance": i / 100 + 0.001}}
            for i in range(100)]
    with pytest.raises(CurationError, match="'mean_reflectance:4'"):
        curate(rows, balance=["mean_reflectance"])
    report = curate(rows, balance=["mean_reflectance:4"]).report
    assert [s["kept"] for s in report["strata"]] == [25, 25, 25, 25]
    with pytest.raises(CurationError, match="quantile bins"):
        curate(rows, balance=["mean_reflectance:x"])


def test_entropy_pruning_without_entropy_descriptor_says_how_to_fix():
    rows = [{"key": "a", "descriptors": {"landcover": "bare"}}]
    with pytest.raises(CurationError, match="no 'entropy' descriptor.*specaware shard"):
        curate(rows, min_entropy=1.0)
    with pytest.raises(CurationError, match="removed all"):
        curate([{"key": "a", "descriptors": {"entropy": 0.1}}], min_entropy=1.0)


def test_no_settings_means_no_curation(skewed):
    assert curation_for(skewed[0]) == (None, None)


def test_inspect_previews_curation(flat_and_textured, capsys):
    out, _, _ = flat_and_textured
    assert cli_main(["inspect", str(out), "--balance", "landcover",
                     "--drop-quantile", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "curation: kept 4 of 8 tiles, removed 4 low-entropy" in text
    assert "balance over landcover" in text
    assert cli_main(["inspect", str(out), "--min-entropy", "2.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["curation"]["kept"] == 4
    assert cli_main(["inspect", str(out), "--balance", "nope"]) == 2
    assert "unknown descriptor 'nope'" in capsys.readouterr().err

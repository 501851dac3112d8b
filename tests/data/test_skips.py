"""Skipped samples are counted truthfully: the rate is skipped / (good + skipped), counted at
one point (after the shuffle buffer), shard losses counted exactly, and bad band metadata or
off-size tiles become counted skips naming shard and key instead of poisoned batches."""
import math

import numpy as np
import pytest

from specaware.data.stream import SkipRateError, SkipStats, make_loader
from specaware.data.views import ViewConfig
from specaware.testing import (edit_shard, edit_shard_headers, npy_bytes, truncate_shard,
                               write_tiny_shards)


def _keys(loader):
    return [m["key"] for batch in loader for m in batch["meta"]]


def _stats(good: int, skipped: int) -> SkipStats:
    stats = SkipStats()
    stats.seen += good
    stats.skip("corrupt sample", "shard-000000.tar", "k", "test", count=skipped)
    return stats


def test_rate_is_skipped_over_all_samples_seen():
    stats = _stats(good=7, skipped=3)
    assert stats.seen == 10 and stats.total_skipped == 3
    assert stats.rate == pytest.approx(0.3)


def test_skip_rate_exactly_at_the_limit_passes_and_just_above_fails():
    _stats(good=8, skipped=2).check(max_rate=0.2, min_samples=1)       # 20 % of 10: allowed
    with pytest.raises(SkipRateError, match=r"skipped 3 of 10 samples \(30.0%\)"):
        _stats(good=7, skipped=3).check(max_rate=0.25, min_samples=1)  # 30 % > 25 %


def test_loader_rate_near_the_limit_on_both_sides(tmp_path):
    """4 of 20 samples garbled = exactly 20 %: allowed at 0.20, stops the pass at 0.19."""
    write_tiny_shards(tmp_path, num_shards=4, per_shard=5, tile=8, max_bands=12)
    for shard in range(4):
        edit_shard(tmp_path / f"shard-00000{shard}.tar",
                   lambda i, ext, payload: b"garbled" if i == 1 and ext == "npy" else None)
    ok = make_loader(tmp_path, mode="eval", batch_size=4, num_workers=0, max_skip_rate=0.20)
    assert len(_keys(ok)) == 16
    assert ok.stats.seen == 20 and ok.stats.total_skipped == 4 and ok.stats.rate == 0.2
    strict = make_loader(tmp_path, mode="eval", batch_size=4, num_workers=0, max_skip_rate=0.19)
    with pytest.raises(SkipRateError, match=r"4 of 20 samples \(20.0%\)"):
        _keys(strict)


def test_shard_truncated_early_loses_exactly_its_missing_samples(tmp_path):
    manifest = write_tiny_shards(tmp_path, num_shards=3, per_shard=6, tile=8, max_bands=12)
    truncate_shard(tmp_path / "shard-000001.tar", keep=2)     # 4 of its 6 samples lost
    loader = make_loader(tmp_path, mode="eval", batch_size=4, num_workers=0, max_skip_rate=0.5)
    keys = _keys(loader)
    shard1 = [r["key"] for r in manifest["tiles"] if r["shard"] == "shard-000001.tar"]
    assert set(shard1[:2]) <= set(keys) and not set(shard1[2:]) & set(keys)
    assert len(keys) == 14
    assert loader.stats.total_skipped == 4 and loader.stats.seen == 18
    assert loader.stats.shards == {"shard-000001.tar": 4}


def test_large_shuffle_buffer_counts_a_lost_shard_at_its_true_share(tmp_path):
    """One unreadable shard of 8 is 12.5 % of the data. Counted when read while good samples
    wait in a 2000-sample buffer, it read as ~100 % and stopped the run; counted after the
    buffer, like the good samples, the rate stays near its true share."""
    write_tiny_shards(tmp_path, num_shards=8, per_shard=4, tile=8, max_bands=12)
    (tmp_path / "shard-000005.tar").write_bytes(b"not a tar archive" * 64)
    loader = make_loader(tmp_path, mode="train", batch_size=8, num_workers=0, seed=3,
                         shuffle_buffer=2000, max_skip_rate=0.2, min_skip_samples=64)
    batches = iter(loader)
    for _ in range(150):
        next(batches)
    stats = loader.stats
    assert stats.seen > 1000 and set(stats.shards) == {"shard-000005.tar"}
    assert 0.08 < stats.rate < 0.17, stats.as_dict()


BAD_METADATA = {
    "nan_gsd": lambda h: {**h, "gsd": math.nan},
    "zero_gsd": lambda h: {**h, "gsd": 0.0},
    "negative_gsd": lambda h: {**h, "gsd": -2.0},
    "null_gsd": lambda h: {**h, "gsd": None},
    "nan_fwhm": lambda h: {**h, "fwhm": [math.nan] + h["fwhm"][1:]},
    "negative_fwhm": lambda h: {**h, "fwhm": [-5.0] + h["fwhm"][1:]},
    "wavelength_in_micrometres": lambda h: {**h, "wavelength": [w / 1000 for w in h["wavelength"]]},
    "wavelength_above_15um": lambda h: {**h, "wavelength": h["wavelength"][:-1] + [20000.0]},
    "duplicated_wavelength": lambda h: {**h, "wavelength": [h["wavelength"][1]]
                                        + h["wavelength"][1:]},
    "null_wavelength": lambda h: {**h, "wavelength": None},
    "list_meta": lambda h: {**h, "meta": [1, 2]},
    "nan_scale": lambda h: {**h, "scale": math.nan},
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_band_metadata_is_a_counted_skip_naming_shard_and_key(tmp_path, case):
    manifest = write_tiny_shards(tmp_path, num_shards=2, per_shard=3, tile=8, max_bands=12)
    edit_shard_headers(tmp_path / "shard-000001.tar",
                       lambda i, h: BAD_METADATA[case](h) if i == 2 else None)
    bad_key = manifest["tiles"][5]["key"]
    loader = make_loader(tmp_path, mode="eval", batch_size=2, num_workers=0, max_skip_rate=0.5)
    batches = list(loader)
    keys = [m["key"] for b in batches for m in b["meta"]]
    assert len(keys) == 5 and bad_key not in keys
    assert loader.stats.skipped == {"bad metadata": 1}
    assert "shard-000001.tar" in loader.stats.examples[0] and bad_key in loader.stats.examples[0]
    for b in batches:  # nothing non-finite reaches the model
        assert all(np.isfinite(v).all() for v in (b["gsd"].numpy(), b["fwhm"].numpy(),
                                                  b["wavelength"].numpy()))


def test_zero_band_sample_is_a_counted_skip(tmp_path):
    write_tiny_shards(tmp_path, num_shards=1, per_shard=3, tile=8, max_bands=12)

    def empty(i, ext, payload):
        if i != 1:
            return None
        if ext == "npy":
            return npy_bytes(np.zeros((0, 8, 8), np.float16))
        import json
        h = json.loads(payload)
        return json.dumps({**h, "wavelength": [], "fwhm": [], "band_valid": []}).encode()
    edit_shard(tmp_path / "shard-000000.tar", empty)
    loader = make_loader(tmp_path, mode="eval", batch_size=2, num_workers=0, max_skip_rate=0.5)
    assert len(_keys(loader)) == 2
    assert loader.stats.skipped == {"bad metadata": 1}
    assert "0 bands" in loader.stats.examples[0]


def test_off_size_tile_is_a_counted_skip_not_a_collate_error(tmp_path):
    write_tiny_shards(tmp_path, num_shards=2, per_shard=3, tile=8, max_bands=12)
    edit_shard(tmp_path / "shard-000000.tar",
               lambda i, ext, p: npy_bytes(np.full((12, 12, 12), 0.2, np.float16))
               if i == 0 and ext == "npy" else None)
    loader = make_loader(tmp_path, mode="eval", batch_size=3, num_workers=0, max_skip_rate=0.5)
    assert len(_keys(loader)) == 5
    assert loader.stats.skipped == {"off-size tile": 1}
    assert "12x12 tile in a shard set of 8x8" in loader.stats.examples[0]
    # a crop view makes sizes agree: a larger tile is then fine
    cropped = make_loader(tmp_path, mode="eval", batch_size=3, num_workers=0,
                          views=ViewConfig(crop=8))
    assert len(_keys(cropped)) == 6 and cropped.stats.total_skipped == 0


def test_a_header_that_is_not_json_is_an_undecodable_skip_saying_why(tmp_path):
    manifest = write_tiny_shards(tmp_path, num_shards=1, per_shard=3, tile=8, max_bands=12)
    edit_shard(tmp_path / "shard-000000.tar",
               lambda i, ext, payload: b"{not json" if i == 1 and ext == "json" else None)
    loader = make_loader(tmp_path, mode="eval", batch_size=2, num_workers=0, max_skip_rate=0.5)
    assert len(_keys(loader)) == 2
    assert loader.stats.skipped == {"undecodable sample": 1}
    example = loader.stats.examples[0]
    assert example.startswith(f"undecodable sample: shard-000000.tar :: "
                              f"{manifest['tiles'][1]['key']}: JSONDecodeError: ")


@pytest.mark.parametrize("lazy", [True, False])
def test_the_tar_member_key_names_the_sample_not_its_json_copy(tmp_path, lazy):
    """A header whose own `key` is missing or stale (a renamed or hand-edited shard) does not
    rename the sample: meta['key'] is the tar key the skip examples and curation lists use."""
    manifest = write_tiny_shards(tmp_path, num_shards=1, per_shard=3, tile=8, max_bands=12)
    edit_shard_headers(tmp_path / "shard-000000.tar",
                       lambda i, h: {k: v for k, v in h.items() if k != "key"} if i == 0
                       else {**h, "key": "stale-name"} if i == 1 else None)
    loader = make_loader(tmp_path, mode="train" if lazy else "eval", batch_size=3,
                         num_workers=0, epoch_samples=3 if lazy else None)
    keys, tar_keys = _keys(loader), {t["key"] for t in manifest["tiles"]}
    assert len(keys) == 3 and set(keys) <= tar_keys  # never "?" nor "stale-name"
    if not lazy:
        assert sorted(keys) == sorted(tar_keys)
    assert loader.stats.total_skipped == 0

"""Streaming loader: exact eval split over ranks x workers, infinite per-rank train streams,
lazy decoding identical to the codec, skipped samples counted and a loud failure past the rate."""
import io
import json
import os

import numpy as np
import pytest
import torch

from specaware.data.codec import decode_sample, encode_sample
from specaware.data.sample import make_sample
from specaware.data.stream import LazyCube, SkipRateError, make_loader, read_shard, SkipStats
from specaware.data.views import ViewConfig
from specaware.testing import corrupt_shard, write_tiny_shards


def _keys(loader):
    return [m["key"] for batch in loader for m in batch["meta"]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    manifest = write_tiny_shards(out, num_shards=5, per_shard=3, tile=8, max_bands=12)
    return out, sorted(row["key"] for row in manifest["tiles"])


@pytest.mark.parametrize("num_shards", [5, 2])  # 2 < 2 ranks x 2 workers: split by sample index
def test_eval_two_ranks_two_workers_see_every_sample_exactly_once(tmp_path, num_shards):
    manifest = write_tiny_shards(tmp_path, num_shards=num_shards, per_shard=3, tile=8,
                                 max_bands=12)
    per_rank = [_keys(make_loader(tmp_path, mode="eval", batch_size=2, num_workers=2, rank=r,
                                  world_size=2)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    everything = per_rank[0] + per_rank[1]
    assert sorted(everything) == sorted(row["key"] for row in manifest["tiles"])
    assert all(per_rank)  # both ranks got work


def test_train_is_infinite_and_differs_per_rank(shards):
    out, keys = shards
    streams = []
    for rank in range(2):
        loader = make_loader(out, mode="train", batch_size=4, num_workers=2, rank=rank,
                             world_size=2, shuffle_buffer=8, seed=1)
        batches = iter(loader)
        streams.append([m["key"] for _ in range(2 * len(keys)) for m in next(batches)["meta"]])
    assert len(streams[0]) == 8 * len(keys)  # far more than one pass: the stream does not end
    assert streams[0] != streams[1]
    again = make_loader(out, mode="train", batch_size=4, num_workers=2, rank=0, world_size=2,
                        shuffle_buffer=8, seed=1)
    batches = iter(again)
    assert [m["key"] for _ in range(3) for m in next(batches)["meta"]] == streams[0][:12]


def test_train_epochs_have_the_requested_length_and_fresh_randomness(shards):
    out, _ = shards
    loader = make_loader(out, mode="train", batch_size=2, num_workers=2, epoch_samples=8)
    first, second = _keys(loader), _keys(loader)
    assert len(first) == len(second) == 8 and first != second
    assert loader.epoch == 2


@pytest.mark.parametrize("dtype", ["float16", "int16"])
def test_lazy_decoding_matches_the_codec(tmp_path, dtype):
    write_tiny_shards(tmp_path, num_shards=1, per_shard=4, tile=8, dtype=dtype,
                      invalid_fraction=0.2)
    raws = list(read_shard(str(tmp_path / "shard-000000.tar"), SkipStats()))
    batch = next(iter(make_loader(tmp_path, mode="eval", batch_size=4, num_workers=0)))
    for i, raw in enumerate(raws):
        ref = decode_sample(np.array(raw["npy"]), raw["json"])
        c = ref["image"].shape[0]
        assert batch["meta"][i]["key"] == ref["meta"]["key"]
        np.testing.assert_array_equal(batch["image"][i, :c].numpy(), ref["image"])
        np.testing.assert_array_equal(batch["valid"][i, :c].numpy(), ref["valid"])
        np.testing.assert_array_equal(batch["wavelength"][i, :c].numpy(), ref["wavelength"])
        assert not ref["valid"].all()  # the fixture has invalid pixels and absorption bands


def test_truncated_shard_is_skipped_and_counted(shards, tmp_path):
    out = tmp_path / "set"
    manifest = write_tiny_shards(out, num_shards=5, per_shard=3, tile=8, max_bands=12)
    corrupt_shard(out / "shard-000002.tar", "truncate")
    loader = make_loader(out, mode="eval", batch_size=2, num_workers=2, max_skip_rate=0.5)
    seen = _keys(loader)
    stats = loader.stats
    lost = {r["key"] for r in manifest["tiles"]} - set(seen)
    assert lost and all(r["shard"] == "shard-000002.tar" for r in manifest["tiles"]
                        if r["key"] in lost)
    assert stats.total_skipped == len(lost) and stats.seen == 15
    assert set(stats.shards) == {"shard-000002.tar"}
    assert any("truncated" in reason for reason in stats.skipped)


def test_garbled_member_is_skipped_with_its_key(tmp_path, caplog):
    manifest = write_tiny_shards(tmp_path, num_shards=2, per_shard=3, tile=8, max_bands=12)
    corrupt_shard(tmp_path / "shard-000001.tar", "garble", member=3)  # 2nd sample's .npy
    loader = make_loader(tmp_path, mode="eval", batch_size=2, num_workers=0, max_skip_rate=0.5)
    with caplog.at_level("WARNING", logger="specaware.data.stream"):
        assert len(_keys(loader)) == 5
    assert loader.stats.skipped == {"corrupt sample": 1}
    broken = manifest["tiles"][4]["key"]  # 2nd sample of the 2nd shard
    assert loader.stats.examples[0].startswith(
        f"corrupt sample: shard-000001.tar :: {broken}: corrupt .npy member (")
    assert any("shard-000001.tar" in r.message and broken in r.message for r in caplog.records)


def test_mixed_sensor_batches_from_the_loader_carry_the_right_band_mask(tmp_path):
    manifest = write_tiny_shards(tmp_path, sensors=("aviris-ng", "sentinel-2a"), num_shards=2,
                                 per_shard=3, tile=8, max_bands=24)
    bands = {row["key"]: row["bands"] for row in manifest["tiles"]}
    assert set(bands.values()) == {24, 13}  # thinned AVIRIS-NG and Sentinel-2 in one set
    for batch in make_loader(tmp_path, mode="eval", batch_size=3, num_workers=0):
        c = batch["image"].shape[1]
        for i, meta in enumerate(batch["meta"]):
            n = bands[meta["key"]]
            assert batch["band_mask"][i].tolist() == [True] * n + [False] * (c - n)
            assert not batch["valid"][i, n:].any() and batch["image"][i, n:].abs().sum() == 0
            assert (batch["wavelength"][i, :n] > 0).all() and batch["valid"][i, :n].any()
        assert batch["sensor"] == [("sentinel-2a" if bands[m["key"]] == 13 else "aviris-ng")
                                   for m in batch["meta"]]


def test_mostly_corrupt_set_fails_naming_the_shards(tmp_path):
    write_tiny_shards(tmp_path, num_shards=4, per_shard=3, tile=8, max_bands=12)
    for i in (0, 1, 3):
        corrupt_shard(tmp_path / f"shard-00000{i}.tar", "garble", member=1)
        corrupt_shard(tmp_path / f"shard-00000{i}.tar", "garble", member=3)
        corrupt_shard(tmp_path / f"shard-00000{i}.tar", "garble", member=5)
    loader = make_loader(tmp_path, mode="eval", batch_size=2, num_workers=2, max_skip_rate=0.2)
    with pytest.raises(SkipRateError, match=r"shard-00000[013]\.tar.*max_skip_rate|max_skip_rate"
                       r".*shard-00000[013]\.tar"):
        _keys(loader)
    train = make_loader(tmp_path, mode="train", batch_size=2, num_workers=2, max_skip_rate=0.2,
                        min_skip_samples=10)
    with pytest.raises(SkipRateError, match="shard-0000"):
        for _ in zip(range(50), train):
            pass


def test_views_run_in_the_workers(shards):
    out, _ = shards
    views = ViewConfig(crop=4, target="full", spectral="window", min_bands=3, max_bands=6)
    batch = next(iter(make_loader(out, mode="train", batch_size=4, num_workers=2, views=views)))
    assert batch["image"].shape[-2:] == batch["target"]["image"].shape[-2:] == (4, 4)
    assert batch["image"].shape[1] <= 6 and batch["band_mask"].sum(1).min() >= 3
    assert batch["target"]["image"].shape[1] == 12


def test_bad_arguments_fail_clearly(shards, tmp_path):
    out, _ = shards
    with pytest.raises(FileNotFoundError, match="not found"):
        make_loader([str(tmp_path / "nope.tar")], batch_size=1)
    with pytest.raises(ValueError, match="mode"):
        make_loader(out, mode="test", batch_size=1)
    with pytest.raises(ValueError, match="rank"):
        make_loader(out, batch_size=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="^make_loader: `keys` is empty; curation removed"):
        make_loader(out, batch_size=1, keys=[])
    tars = sorted(str(p) for p in out.glob("*.tar"))
    with pytest.raises(ValueError, match=r"need a shard dir with manifest.json \(to know which "
                                         r"shard holds which key\)"):
        make_loader(tars, batch_size=1, weights={"k": 1.0})


def test_weights_that_are_zero_everywhere_stop_training_naming_the_rank(shards):
    out, keys = shards
    loader = make_loader(out, mode="train", batch_size=2, num_workers=0, rank=1, world_size=2,
                         weights={k: 0.0 for k in keys})
    with pytest.raises(ValueError, match="^rank 1: none of its 5 shards holds a sample with "
                                         "positive curation weight$"):
        next(iter(loader))


def test_a_worker_reads_its_own_shards_on_one_torch_thread(shards, monkeypatch):
    """The worker side of the stream, run in this process as DataLoader worker 1 of 2."""
    from specaware.data.batch_memory import release_flags
    from specaware.data.stream import ShardStream

    out, _ = shards
    spec = make_loader(out, mode="eval", batch_size=1, num_workers=2).spec
    monkeypatch.setattr(torch.utils.data, "get_worker_info",
                        lambda: type("Info", (), {"id": 1, "num_workers": 2})())
    stream = ShardStream(spec, slots=2)
    stream.flags = release_flags(4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batches = [b for b in stream if not b.get("_final")]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert {m["shard"] for b in batches for m in b["meta"]} == {"shard-000001.tar",
                                                               "shard-000003.tar"}
    slots = {b.get("_slot") for b in batches} - {None}     # None: the pool was full (held)
    assert slots == {2, 3}                                  # its own half of the flags


def _shm_inode(tensor):
    fd, _ = tensor.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


def test_workers_reuse_dropped_batches_and_never_held_ones(shards):
    out, _ = shards
    batches = iter(make_loader(out, mode="train", batch_size=4, num_workers=2, shuffle_buffer=8))
    held = [next(batches) for _ in range(3)]
    held.append({"valid": next(batches)["valid"][0]})  # a view alone keeps its batch alive
    copies = [{k: b[k].clone() for k in ("image", "valid") if k in b} for b in held]
    dropped = [_shm_inode(next(batches)["image"]) for _ in range(30)]
    assert len(set(dropped)) <= 12  # far fewer storages than batches: dropped ones came back
    assert not {_shm_inode(b["valid"]) for b in held} & set(dropped)
    for batch, copy in zip(held, copies):
        for key, value in copy.items():
            torch.testing.assert_close(batch[key], value)  # never overwritten while held


@pytest.mark.parametrize("dtype", ["float16", "int16"])
@pytest.mark.parametrize("invalid", [False, True])
def test_lazy_cube_decodes_into_dirty_memory_like_the_codec(dtype, invalid):
    rng = np.random.default_rng(3)
    cube = rng.uniform(0.0, 0.8, (9, 5, 6)).astype(np.float32)
    valid = np.ones((9, 5, 6), bool)
    valid[:, 1, 2] = not invalid
    valid[4, 3, 3] = not invalid
    band_valid = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0], bool)  # three runs of dropped bands
    sample = make_sample(cube, np.linspace(400, 900, 9), np.full(9, 10.0), valid=valid,
                         gsd=1.0, sensor="s", level="L2", meta={"key": "k"})
    members = encode_sample(sample, dtype=dtype, band_valid=band_valid, offset=0.01 * (
        dtype == "int16"))
    header = json.loads(members["json"])
    raw = np.load(io.BytesIO(members["npy"]))
    if invalid and dtype == "float16":
        raw[6, 0, 0] = np.inf  # a damaged value, not the NaN sentinel, is invalid too
    ref = decode_sample(raw, header)
    image, valid_out = torch.full((9, 5, 6), 7.0), torch.ones((9, 5, 6), dtype=torch.bool)
    valid_out[0, 0, 0] = False  # memory of an earlier batch: everything must be overwritten
    LazyCube(raw, header["band_valid"], header["scale"], header["offset"]).write_into(
        image, valid_out)
    np.testing.assert_array_equal(image.numpy(), ref["image"])
    np.testing.assert_array_equal(valid_out.numpy(), ref["valid"])
    assert not ref["valid"][~band_valid].any()
    assert ref["valid"][band_valid].all() == (not invalid)  # both decode paths are exercised


def test_worker_loaders_prefetch_as_many_batches_as_asked(shards):
    out, _ = shards
    loader = make_loader(out, mode="eval", batch_size=2, num_workers=1, prefetch_factor=3)
    assert loader._data_loader().prefetch_factor == 3


def test_eval_views_are_deterministic_whatever_the_seed(shards):
    out, _ = shards
    views = ViewConfig(crop=4)
    first, second = (next(iter(make_loader(out, mode="eval", batch_size=3, num_workers=0,
                                           seed=seed, views=views)))["image"] for seed in (0, 1))
    torch.testing.assert_close(first, second, rtol=0, atol=0)    # centre crop, no flips


def test_weighted_training_draws_only_samples_of_positive_weight(shards):
    out, keys = shards
    chosen = set(keys[::2])
    loader = make_loader(out, mode="train", batch_size=4, num_workers=0, shuffle_buffer=4,
                         weights={k: (1.0 if k in chosen else 0.0) for k in keys})
    drawn = [m["key"] for _, batch in zip(range(3), loader) for m in batch["meta"]]
    assert len(drawn) == 12 and set(drawn) <= chosen

"""Shard writer + manifest: layout, counts, refusal to clobber, and readability by webdataset."""
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from specaware.data.codec import decode_sample
from specaware.data.shard import (
    ShardSetExistsError,
    ShardWriter,
    make_key,
    read_manifest,
)
from specaware.testing import corrupt_shard, write_tiny_shards


def test_tiny_shards_have_expected_layout_and_manifest(tmp_path):
    manifest = write_tiny_shards(tmp_path, num_shards=3, per_shard=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert read_manifest(tmp_path) == json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["total"] == 6 and [s["count"] for s in manifest["shards"]] == [2, 2, 2]
    assert manifest["sensors"] == {"aviris-ng": {"count": 3, "bands": [24]},
                                   "sentinel-2a": {"count": 3, "bands": [13]}}
    assert manifest["band_counts"] == {"24": 3, "13": 3}
    assert [t["shard"] for t in manifest["tiles"]] == [
        "shard-000000.tar"] * 2 + ["shard-000001.tar"] * 2 + ["shard-000002.tar"] * 2
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names == [f"{manifest['tiles'][0]['key']}.json", f"{manifest['tiles'][0]['key']}.npy",
                     f"{manifest['tiles'][1]['key']}.json", f"{manifest['tiles'][1]['key']}.npy"]


def test_webdataset_reads_the_shards_and_codec_decodes_them(tmp_path):
    manifest = write_tiny_shards(tmp_path, dtype="int16")
    urls = [str(tmp_path / s["name"]) for s in manifest["shards"]]
    samples = [decode_sample(s["npy"], s["json"]) for s in wds.WebDataset(urls, shardshuffle=False)]
    assert [s["meta"]["key"] for s in samples] == [t["key"] for t in manifest["tiles"]]
    s2 = samples[1]
    assert s2["sensor"] == "sentinel-2a" and s2["image"].shape == (13, 16, 16)
    b10 = int(np.argmin(abs(s2["wavelength"] - 1373.5)))
    assert not s2["valid"][b10].any()  # cirrus band falls in the 1340-1460 nm absorption range


def test_rerun_into_existing_set_refuses_unless_overwrite(tmp_path):
    write_tiny_shards(tmp_path)
    with pytest.raises(ShardSetExistsError, match="pass --overwrite"):
        write_tiny_shards(tmp_path)
    manifest = write_tiny_shards(tmp_path, num_shards=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == ["shard-000000.tar"]
    assert manifest["total"] == 4


def test_same_input_gives_byte_identical_shards(tmp_path):
    write_tiny_shards(tmp_path / "a")
    write_tiny_shards(tmp_path / "b")
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_failed_write_leaves_no_manifest_and_no_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, shard_size=2) as writer:
            writer.add("a", {"npy": b"x", "json": b"{}"})
            raise RuntimeError("crash mid-shard")
    assert list(tmp_path.iterdir()) == []


def test_keys_are_webdataset_safe_and_unique(tmp_path):
    assert make_key("f.1 scene/x", 0, 128) == "f-1-scene-x_r000000_c000128"
    with ShardWriter(tmp_path) as writer:
        writer.add("a", {"json": b"{}"})
        with pytest.raises(ValueError, match="duplicate sample key 'a'"):
            writer.add("a", {"json": b"{}"})
        with pytest.raises(ValueError, match="contains a dot"):
            writer.add("a.b", {"json": b"{}"})


def test_corrupt_shard_helper_damages_files(tmp_path):
    manifest = write_tiny_shards(tmp_path)
    shard = tmp_path / manifest["shards"][0]["name"]
    size = shard.stat().st_size
    corrupt_shard(shard, "truncate")
    assert shard.stat().st_size < size
    other = tmp_path / manifest["shards"][1]["name"]
    corrupt_shard(other, "garble", member=1)
    with tarfile.open(other) as tar:
        payload = tar.extractfile(tar.getmembers()[1]).read()
    assert payload.startswith(b"\x00not a valid member")

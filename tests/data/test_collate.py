"""Collation: mixed band counts are padded with the right band_mask, never truncated."""
import numpy as np
import pytest
import torch

from specaware.data.batch_memory import BatchMemory, ReleaseTracker, release_flags
from specaware.data.collate import CollateError, bucketed, collate


def _sample(c, key, h=4, w=4, sensor="s", valid_2d=False, target_bands=None, label=None):
    rng = np.random.default_rng(c)
    image = rng.random((c, h, w)).astype(np.float32) + 0.1
    valid = np.ones((h, w) if valid_2d else (c, h, w), bool)
    valid[..., 0, 0] = False
    s = {"image": image, "valid": valid, "wavelength": np.linspace(400, 2400, c, dtype=np.float32),
         "fwhm": np.full(c, 10.0, np.float32), "gsd": 2.0, "sensor": sensor, "level": "L2",
         "meta": {"key": key}}
    if target_bands:
        s["target"] = _sample(target_bands, key + "-t", h, w)
        s["target"].pop("meta")
    if label is not None:
        s["label"] = label
    return s


def test_mixed_band_counts_pad_with_mask():
    batch = collate([_sample(5, "a"), _sample(3, "b"), _sample(7, "c", valid_2d=True)])
    assert batch["image"].shape == (3, 7, 4, 4) and batch["image"].dtype == torch.float32
    assert batch["band_mask"].tolist() == [[True] * 5 + [False] * 2, [True] * 3 + [False] * 4,
                                           [True] * 7]
    assert batch["image"][1, 3:].abs().sum() == 0 and not batch["valid"][1, 3:].any()
    assert batch["wavelength"][1, 3:].abs().sum() == 0 and batch["fwhm"][0, 5:].abs().sum() == 0
    np.testing.assert_array_equal(batch["image"][0, :5].numpy(), _sample(5, "a")["image"])
    # a [H, W] valid mask is broadcast over the sample's real bands only
    assert batch["valid"][2].shape == (7, 4, 4) and not batch["valid"][2, :, 0, 0].any()
    assert batch["valid"][2, :, 1, 1].all()
    assert batch["gsd"].tolist() == [2.0, 2.0, 2.0] and batch["sensor"] == ["s", "s", "s"]
    assert [m["key"] for m in batch["meta"]] == ["a", "b", "c"]


def test_pad_bands_never_truncates():
    assert collate([_sample(3, "a")], pad_bands=6)["image"].shape[1] == 6
    with pytest.raises(CollateError, match="'a' has 5 bands"):
        collate([_sample(5, "a")], pad_bands=4)


def test_target_is_padded_on_its_own():
    batch = collate([_sample(5, "a", target_bands=2), _sample(3, "b", target_bands=4)])
    target = batch["target"]
    assert target["image"].shape == (2, 4, 4, 4)
    assert target["band_mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert batch["image"].shape == (2, 5, 4, 4)


def test_partial_target_or_label_is_an_error_naming_the_key():
    with pytest.raises(CollateError, match="'target'"):
        collate([_sample(5, "a", target_bands=2), _sample(3, "lonely")])
    with pytest.raises(CollateError, match="lonely"):
        collate([_sample(5, "a", label=1), _sample(3, "lonely")])


def test_labels_become_long_tensors():
    batch = collate([_sample(2, "a", label=3), _sample(2, "b", label=1)])
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [3, 1]
    masks = collate([_sample(2, "a", label=np.ones((4, 4), np.uint8))])["label"]
    assert masks.shape == (1, 4, 4) and masks.dtype == torch.long


def test_different_tile_sizes_fail_clearly():
    with pytest.raises(CollateError, match="crop"):
        collate([_sample(2, "a"), _sample(2, "b", h=5)])


def test_bucketing_groups_by_sensor_and_keeps_every_sample():
    samples = [_sample(3, f"k{i}", sensor=["x", "y"][i % 3 == 0]) for i in range(10)]
    groups = list(bucketed(samples, batch_size=3, by="sensor"))
    assert all(len({s["sensor"] for s in g}) == 1 for g in groups)
    assert sorted(s["meta"]["key"] for g in groups for s in g) == sorted(f"k{i}" for i in range(10))
    full = [g for g in groups if len(g) == 3]
    assert len(full) == 2 + 1  # 6 "x" -> two full batches, 4 "y" -> one full + one partial
    by_bands = list(bucketed([_sample(2, "a"), _sample(3, "b"), _sample(2, "c")], 2, by="bands"))
    assert [len(g) for g in by_bands] == [2, 1]
    assert list(bucketed([_sample(2, "a")], 2, by="bands", partial=False)) == []


def _pooled(memory, key, c=4):
    return collate([_sample(c, key), _sample(c - 1, key + "b")], memory=memory)


def test_pooled_storage_is_reused_only_once_every_view_is_gone():
    memory = BatchMemory(count=4)
    first = _pooled(memory, "a")
    storage = first["image"].untyped_storage()
    assert first["valid"].untyped_storage() is storage  # one storage: one release per batch
    held = first["valid"][1]  # a view alone keeps the batch alive
    expected = held.clone()
    del first
    second = _pooled(memory, "c", c=5)
    assert second["image"].untyped_storage() is not storage
    torch.testing.assert_close(held, expected)  # never overwritten while viewed
    del held, second
    third = _pooled(memory, "d")
    assert third["image"].untyped_storage() is storage
    assert (memory.reused, memory.allocated) == (1, 2)
    plain = collate([_sample(4, "d"), _sample(3, "db")])  # reused memory, same batch
    for key in ("image", "valid", "band_mask", "wavelength", "fwhm", "gsd"):
        torch.testing.assert_close(third[key], plain[key], rtol=0, atol=0)
    assert not third["valid"][1, 3:].any() and not third["band_mask"][1, 3:].any()


def test_without_torch_storage_use_count_the_pool_never_reuses(monkeypatch):
    """A torch without the private reference count: storages are never recycled (each batch
    gets fresh memory), and the batches are still right."""
    monkeypatch.setattr("specaware.data.batch_memory._storage_use_count", None)
    memory = BatchMemory(count=4)
    first = _pooled(memory, "a")
    storage = first["image"].untyped_storage()
    del first
    second = _pooled(memory, "d")
    assert second["image"].untyped_storage() is not storage
    assert (memory.reused, memory.allocated, len(memory.slots)) == (0, 2, 0)  # holds nothing
    plain = collate([_sample(4, "d"), _sample(3, "db")])
    for key in ("image", "valid", "band_mask"):
        torch.testing.assert_close(second[key], plain[key], rtol=0, atol=0)


def test_full_pool_allocates_one_off_storages_and_never_blocks():
    memory = BatchMemory(count=2)
    held = [_pooled(memory, f"k{i}") for i in range(4)]
    assert len(memory.slots) == 2 and memory.allocated == 4
    assert len({id(b["image"].untyped_storage()) for b in held}) == 4


def test_tracker_clears_a_flag_once_the_last_tensor_is_gone_and_keeps_the_mapping():
    flags = release_flags(4)
    memory = BatchMemory(flags, first=2, count=2)
    batch = collate([_sample(3, "a", target_bands=2)], memory=memory)
    assert (batch["_slot"], batch["target"]["_slot"]) == (2, 3) and list(flags) == [0, 0, 1, 1]
    memory.slots.clear()  # the consumer process sees only its own references
    tracker = ReleaseTracker(flags)
    storage = tracker.adopt(batch)["image"].untyped_storage()
    assert "_slot" not in batch and "_slot" not in batch["target"]
    image = batch["image"]
    del batch
    tracker.sweep()
    assert list(flags) == [0, 0, 1, 0]  # the target's storage is unused, the input's viewed
    del image
    tracker.sweep()
    assert list(flags) == [0, 0, 0, 0]
    flags[2] = 1  # the worker sends this storage again, still in flight: not released twice
    tracker.sweep()
    assert list(flags) == [0, 0, 1, 0] and tracker.mapped[2] is storage  # still mapped here


def test_reused_storage_of_another_band_layout_leaves_no_stale_band_metadata():
    # the first batch fills every band of both samples; the next one, in the same storage, pads
    # its second sample: band_mask, wavelength and fwhm past its 2 bands must read as padding
    memory = BatchMemory(count=2)
    first = collate([_sample(4, "a"), _sample(4, "b")], memory=memory)
    storage = first["image"].untyped_storage()
    assert first["band_mask"].all()
    del first
    second = collate([_sample(4, "c"), _sample(2, "d")], memory=memory)
    assert second["image"].untyped_storage() is storage        # the pooled storage came back
    plain = collate([_sample(4, "c"), _sample(2, "d")])
    for key in ("image", "valid", "band_mask", "wavelength", "fwhm", "gsd"):
        torch.testing.assert_close(second[key], plain[key], rtol=0, atol=0)
    assert second["band_mask"][1].tolist() == [True, True, False, False]
    assert not second["wavelength"][1, 2:].any() and not second["fwhm"][1, 2:].any()


def test_pooled_views_tile_their_storage_inside_its_bounds_without_overlap():
    # torch's set_ does not check bounds: a wrong element offset reads and writes past the end
    batch = collate([_sample(4, "a"), _sample(3, "b")], memory=BatchMemory(count=2))
    storage = batch["image"].untyped_storage()
    spans = []
    for key in ("image", "wavelength", "fwhm", "gsd", "valid", "band_mask"):
        t = batch[key]
        assert t.untyped_storage().data_ptr() == storage.data_ptr(), key
        start = t.storage_offset() * t.element_size()
        spans.append((start, start + t.numel() * t.element_size(), key))
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] <= storage.nbytes()
    for (_, end, key), (start, _, nxt) in zip(spans, spans[1:]):
        assert end <= start, f"{key} overlaps {nxt}"


def test_two_date_samples_give_one_batch_per_date_and_the_change_label():
    pairs = [{"t1": _sample(5, f"{k}1"), "t2": _sample(3, f"{k}2"), "label": np.full((4, 4), i)}
             for i, k in enumerate("ab")]
    batch = collate(pairs)
    assert set(batch) == {"t1", "t2", "label"}
    assert batch["t1"]["image"].shape == (2, 5, 4, 4) and batch["t2"]["image"].shape[1] == 3
    assert [m["key"] for m in batch["t2"]["meta"]] == ["a2", "b2"]
    assert batch["label"].tolist() == np.stack([np.zeros((4, 4)), np.ones((4, 4))]).tolist()
    unlabelled = collate([{"t1": _sample(2, "c1"), "t2": _sample(2, "c2")}])
    assert set(unlabelled) == {"t1", "t2"}          # no None label to trip the loss


def test_processing_level_travels_with_each_sample_defaulting_to_l2():
    l1 = _sample(2, "a") | {"level": "L1"}
    bare = _sample(2, "b")
    bare.pop("level")
    assert collate([l1, bare])["level"] == ["L1", "L2"]


def test_tile_size_errors_name_every_sample_key_and_target_views_too():
    keyless = _sample(2, "x", h=5, w=5)
    keyless.pop("meta")
    with pytest.raises(CollateError, match=r"\(a: \(4, 4\), \?: \(5, 5\)\)"):
        collate([_sample(2, "a"), keyless])
    with_target = _sample(2, "a", target_bands=2)
    odd = _sample(2, "x", target_bands=2)
    odd.pop("meta")
    odd["target"] = _sample(2, "t", h=5, w=5)
    with pytest.raises(CollateError, match=r"collate \(target\).*a: \(4, 4\), \?: \(5, 5\)"):
        collate([with_target, odd])

"""Fixed train/test split of benchmarks that ship two maps (Houston 2013, GRSS DFC 2013): the
protocol's `fixed_split`, the .mat loader for the public layouts (TRLabel.mat / TSLabel.mat, or
houston_gt_tr / houston_gt_te in one file) and the config keys that select it."""
import logging

import numpy as np
import pytest
from fixtures import write_houston_split
from scipy.io import loadmat, savemat

from specaware.config import ConfigError, build
from specaware.finetune.config import FinetuneConfig
from specaware.finetune.datasets.mat import load_benchmark
from specaware.finetune.datasets.protocol import fixed_split
from specaware.finetune.runner import check_split


def _maps():
    """Training map: class 0 100 px, class 1 2 px, class 2 1 px; test map: 150 px elsewhere."""
    train, test = np.full((20, 20), -1), np.full((20, 20), -1)
    train[:10, :10] = 0
    train[10, :2] = 1
    train[11, 0] = 2
    test[12:, :] = 1
    test[:10, 10:] = 0
    test[10, 10:] = 2
    return train, test


def _pixels(coords: np.ndarray) -> set:
    return {tuple(p) for p in coords.tolist()}


def test_train_and_val_come_from_the_training_map_and_test_from_the_test_map():
    train_map, test_map = _maps()
    split = fixed_split(train_map, test_map, seed=0)
    assert (train_map[split.train[:, 0], split.train[:, 1]] >= 0).all()
    assert (train_map[split.val[:, 0], split.val[:, 1]] >= 0).all()
    assert _pixels(split.test) == _pixels(np.argwhere(test_map >= 0))
    assert not _pixels(split.train) & _pixels(split.val)
    assert _pixels(split.train) | _pixels(split.val) == _pixels(np.argwhere(train_map >= 0))


def test_default_validation_is_ten_percent_of_each_class_and_one_from_two_pixels():
    train_map, test_map = _maps()
    split = fixed_split(train_map, test_map, seed=0)
    val = train_map[split.val[:, 0], split.val[:, 1]]
    assert np.bincount(val, minlength=3).tolist() == [10, 1, 0]   # 100 px, 2 px, 1 px
    split = fixed_split(train_map, test_map, seed=0, val_per_class=20)
    assert np.bincount(train_map[split.val[:, 0], split.val[:, 1]]).tolist() == [20, 1]


def test_a_seed_repeats_its_split_and_seeds_vary_only_validation():
    train_map, test_map = _maps()
    a, b, c = (fixed_split(train_map, test_map, s) for s in (3, 3, 4))
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "test"))
    assert np.array_equal(a.test, c.test) and _pixels(a.val) != _pixels(c.val)
    assert _pixels(a.train) | _pixels(a.val) == _pixels(c.train) | _pixels(c.val)


def test_overlapping_or_misshaped_maps_are_refused_naming_both_maps():
    train_map, test_map = _maps()
    test_map[0, :3] = 0
    with pytest.raises(ValueError, match=r"3 pixels .*tr\.mat.*te\.mat"):
        fixed_split(train_map, test_map, 0, sources=("tr.mat", "te.mat"))
    with pytest.raises(ValueError, match=r"tr\.mat is \(20, 20\).*te\.mat is \(20, 19\)"):
        fixed_split(train_map, test_map[:, :-1], 0, sources=("tr.mat", "te.mat"))


def test_a_test_class_without_training_pixels_warns_naming_it(caplog):
    train_map, test_map = _maps()
    train_map[train_map == 2] = -1
    with caplog.at_level(logging.WARNING):
        split = fixed_split(train_map, test_map, 0, class_names=["Grass", "Soil", "Water"])
    assert "Water" in caplog.text and "Soil" not in caplog.text
    assert len(split.test) == (test_map >= 0).sum()   # its test pixels stay in the test set


@pytest.mark.parametrize("one_file", [False, True], ids=["TRLabel_TSLabel", "houston_gt"])
def test_houston_loader_reads_both_public_layouts(tmp_path, one_file):
    image, train, test = write_houston_split(tmp_path, h=10, w=12, one_file=one_file)
    scene = load_benchmark("houston2013", image, train, test_gt=test)
    tr_key, te_key = ("houston_gt_tr", "houston_gt_te") if one_file else ("TRLabel", "TSLabel")
    raw_train, raw_test = loadmat(train)[tr_key], loadmat(test)[te_key]
    assert np.array_equal(scene.labels, raw_train.astype(np.int64) - 1)
    assert np.array_equal(scene.test_labels, raw_test.astype(np.int64) - 1)
    assert scene.num_classes == 15 and scene.class_names[0] == "Healthy grass"


def test_overlapping_files_are_refused_naming_both_files_and_the_count(tmp_path):
    image, train, test = write_houston_split(tmp_path, h=10, w=12)
    raw = loadmat(train)["TRLabel"]
    raw_test = loadmat(test)["TSLabel"]
    overlap = np.argwhere(raw > 0)[:4]
    raw_test[overlap[:, 0], overlap[:, 1]] = 1
    savemat(test, {"TSLabel": raw_test})
    with pytest.raises(ValueError, match=r"4 pixels .*TRLabel\.mat \[TRLabel\].*TSLabel\.mat"):
        load_benchmark("houston2013", image, train, test_gt=test)


def test_a_test_map_on_another_grid_is_refused_naming_both_files(tmp_path):
    image, train, test = write_houston_split(tmp_path, h=10, w=12)
    savemat(test, {"TSLabel": loadmat(test)["TSLabel"][:, :-2]})
    with pytest.raises(ValueError, match=r"TRLabel\.mat.*\(10, 12\).*TSLabel\.mat.*\(10, 10\)"):
        load_benchmark("houston2013", image, train, test_gt=test)


def test_one_file_with_unknown_keys_lists_them_and_one_key_cannot_be_both_maps(tmp_path):
    image, _, _ = write_houston_split(tmp_path, h=10, w=12)
    both = tmp_path / "maps.mat"
    savemat(both, {"a": np.zeros((10, 12), np.uint8), "b": np.zeros((10, 12), np.uint8)})
    with pytest.raises(KeyError, match=r"a \(10, 12\), b \(10, 12\).*gt_key"):
        load_benchmark("houston2013", image, both, test_gt=both)
    with pytest.raises(ValueError, match="both read from 'a'.*test_gt_key"):
        load_benchmark("houston2013", image, both, test_gt=both, gt_key="a", test_gt_key="a")


def test_split_key_takes_random_or_fixed_and_fixed_needs_a_test_map():
    with pytest.raises(ConfigError, match=r"protocol\.split.*'fix'.*\['random', 'fixed', 'kshot'\]"):
        build(FinetuneConfig, [], ["protocol.split=fix"])
    with pytest.raises(ValueError, match="data.test_gt=PATH"):
        check_split(build(FinetuneConfig, [], ["protocol.split=fixed"]))
    with pytest.raises(ValueError, match="protocol.split=fixed"):
        check_split(build(FinetuneConfig, [], ["data.test_gt=TSLabel.mat"]))
    with pytest.raises(ValueError, match="data.kind=geotiff"):
        check_split(build(FinetuneConfig, [], ["protocol.split=fixed", "data.kind=geotiff",
                                               "data.test_gt=TSLabel.mat"]))
    check_split(build(FinetuneConfig, [], ["protocol.split=fixed", "data.test_gt=TSLabel.mat"]))

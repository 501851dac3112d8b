"""Data adapters and protocols: the benchmark split rules, GeoTIFF band tables, class-folder
tiles and labelled webdataset shards (the `specaware.testing` writer)."""

import numpy as np
import pytest
import torch
from fixtures import write_geotiff, write_mask

from specaware.data.reader import RasterReader
from specaware.finetune.datasets.geotiff import KEYS, GeoTiffTiles
from specaware.finetune.datasets.protocol import PixelPatches, keep_only, split_pixels
from specaware.finetune.datasets.scene import HSIScene, LabelledScene
from specaware.finetune.datasets.tiles import LabelledShards, TileFolder, stratified_split


def _shared_fixtures():
    import specaware.testing
    return specaware.testing


def _labels():
    labels = np.full((20, 20), -1)
    labels[:10, :10] = 0          # 100 pixels
    labels[10:, :] = 1            # 200 pixels
    labels[0, 15:19] = 2          # 4 pixels: a rare class
    return labels


def test_per_class_split_takes_n_pixels_and_leaves_rare_classes_test_pixels():
    split = split_pixels(_labels(), seed=0, per_class=30, val_per_class=5)
    labels = _labels()
    train = labels[split.train[:, 0], split.train[:, 1]]
    assert np.bincount(train).tolist() == [30, 30, 2]         # rare class: half for training
    test = labels[split.test[:, 0], split.test[:, 1]]
    assert (np.bincount(test, minlength=3) > 0).all()
    every = np.concatenate([split.train, split.val, split.test])
    assert len(every) == (labels >= 0).sum() == len({tuple(p) for p in every.tolist()})


def test_fraction_split_is_reproducible_per_seed_and_differs_between_seeds():
    a, b = split_pixels(_labels(), 3, None, 0.1), split_pixels(_labels(), 3, None, 0.1)
    c = split_pixels(_labels(), 4, None, 0.1)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    assert np.bincount(_labels()[a.train[:, 0], a.train[:, 1]]).tolist() == [10, 20, 1]
    with pytest.raises(ValueError, match="fraction"):
        split_pixels(_labels(), 0, None, 1.5)


def test_keep_only_hides_every_pixel_outside_the_split():
    split = split_pixels(_labels(), 0, per_class=5)
    kept = keep_only(_labels(), split.train)
    assert (kept >= 0).sum() == len(split.train)


def test_pixel_patch_is_centred_on_its_pixel_with_reflect_padding_at_borders():
    image = np.arange(2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10)
    scene = LabelledScene(HSIScene(image, np.array([500, 600], np.float32),
                                   np.full(2, 10, np.float32), 30.0), np.zeros((10, 10), int),
                          ["a"])
    patches = PixelPatches(scene, np.array([[5, 5], [0, 0]]), 5)
    assert patches[0]["image"][0, 2, 2] == image[0, 5, 5] and patches[0]["label"] == 0
    assert patches[1]["image"].shape == (2, 5, 5) and patches[1]["image"][0, 2, 2] == image[0, 0, 0]
    assert patches[1]["image"][0, 1, 2] == image[0, 1, 0]   # reflected row above the border


def test_geotiff_without_wavelengths_names_the_fix_and_a_sensor_fills_them(tmp_path):
    path = write_geotiff(tmp_path / "x.tif", np.ones((13, 8, 8), np.float32), None)
    with pytest.raises(ValueError, match="data.sensor=.*data.wavelength="):
        RasterReader.open(path, keys=KEYS)
    info = RasterReader.open(path, sensor="sentinel-2a", keys=KEYS)
    assert len(info.wavelength) == 13 and info.sensor == "sentinel-2a" and info.gsd == 30.0


def test_geotiff_tiles_refuse_masks_on_another_grid(tmp_path):
    image = write_geotiff(tmp_path / "i.tif", np.ones((3, 16, 16), np.float32), [500, 600, 700])
    mask = write_mask(tmp_path / "m.tif", np.ones((12, 16)))
    with pytest.raises(ValueError, match="differ in size"):
        GeoTiffTiles([str(image)], [str(mask)], tile=8)


def test_tile_folder_gives_class_per_folder_and_pads_small_tiles(tmp_path):
    wl = [500.0, 800.0, 1600.0]
    for k, name in enumerate(["forest", "water"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            size = 8 if i else 6
            write_geotiff(tmp_path / name / f"t{i}.tif",
                          np.full((3, size, size), 0.1 + 0.3 * k, np.float32), wl)
    folder = TileFolder(tmp_path)
    assert folder.class_names == ["forest", "water"] and folder.labels.tolist() == [0] * 3 + [1] * 3
    small = folder[0]
    assert small["image"].shape == (3, 8, 8) and small["label"] == 0
    assert small["valid"][:, 6:].sum() == 0 and small["valid"][:, :6, :6].all()
    train, val, test = stratified_split(folder.labels, 0, 1 / 3, 1 / 3)
    assert len(train) == len(val) == len(test) == 2


def test_labelled_shards_batch_mixed_sensors_with_labels(tmp_path):
    shared = _shared_fixtures()
    manifest = shared.write_tiny_shards(tmp_path / "shards", labels=3, num_shards=2, per_shard=3)
    seen, labels = 0, []
    for batch in LabelledShards(str(tmp_path / "shards"), batch_size=4):
        assert batch["label"].dtype == torch.long and batch["band_mask"].any(1).all()
        seen += len(batch["label"])
        labels += batch["label"].tolist()
    assert seen == 6 == sum(s["count"] for s in manifest["shards"])
    assert set(labels) <= {0, 1, 2}


def test_unlabelled_shards_fail_naming_the_source(tmp_path):
    shared = _shared_fixtures()
    shared.write_tiny_shards(tmp_path / "shards", num_shards=1, per_shard=2)
    with pytest.raises(ValueError, match="carry no 'label'"):
        next(iter(LabelledShards(str(tmp_path / "shards"), batch_size=2)))


def _run_classification(tmp_path, items):
    from specaware.config import build
    from specaware.finetune.config import FinetuneConfig
    from specaware.finetune.runner import run
    cfg = build(FinetuneConfig, [], items + [
        "task=classification", "model.init=random", "optim.epochs=1", "optim.batch_size=4",
        "protocol.seeds=[0]", "progress=false", f"out={tmp_path / 'run'}", "model.pool=mean"])
    summary = run(cfg)
    cm = np.loadtxt(tmp_path / "run" / "random" / "seed0" / "confusion.csv", delimiter=",",
                    skiprows=1, usecols=range(1, 4))
    return summary, cm


def test_runner_trains_on_a_tile_folder(tmp_path):
    for k, name in enumerate(["forest", "soil", "water"]):
        (tmp_path / "tiles" / name).mkdir(parents=True)
        for i in range(3):
            write_geotiff(tmp_path / "tiles" / name / f"t{i}.tif",
                          np.full((4, 8, 8), 0.1 + 0.2 * k, np.float32), [450, 650, 850, 1600])
    summary, cm = _run_classification(tmp_path, [
        "data.kind=tiles", f"data.root={tmp_path / 'tiles'}", "protocol.val_fraction=0.34",
        "protocol.test_fraction=0.34"])
    assert cm.shape == (3, 3) and cm.sum() == 3 and "oa" in summary["random"]


def test_runner_trains_on_labelled_shards(tmp_path):
    shared = _shared_fixtures()
    shared.write_tiny_shards(tmp_path / "train", labels=3, num_shards=1, per_shard=4)
    shared.write_tiny_shards(tmp_path / "val", labels=3, num_shards=1, per_shard=3, seed=1)
    summary, cm = _run_classification(tmp_path, [
        "data.kind=shards", f"data.train_shards={tmp_path / 'train'}",
        f"data.val_shards={tmp_path / 'val'}", "data.num_classes=3"])
    assert cm.sum() == 3 and 0 <= summary["random"]["oa"][0] <= 1

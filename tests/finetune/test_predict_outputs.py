"""`specaware predict` outputs: Cloud-Optimized GeoTIFFs, float16 class probabilities, a
configurable ignore_index, each window read once, and memory bounded by a strip of windows."""
from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from specaware.cli import main as cli_main
from specaware.finetune import api
from specaware.finetune.checkpoint import build_head, load_finetuned, model_meta, save_finetuned
from specaware.finetune.config import ModelConfig
from specaware.data.reader import RasterReader
from specaware.finetune.predict import class_map_dtype, predict_scene
from specaware.testing import write_geotiff

WL = np.array([450.0, 550.0, 650.0, 850.0, 1600.0, 2200.0])
K = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A segmentation checkpoint whose head is random but not uniform (distinct classes win)."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    encoder = api.build_encoder(None, "specaware_debug")
    cfg = ModelConfig(variant="specaware_debug", decoder_width=16)
    model = build_head("segmentation", encoder, K, cfg)
    meta = model_meta("segmentation", K, ["water", "crop", "urban"], cfg, encoder,
                      {"tile": 32, "normalization": {"normalize": "none"}})
    return save_finetuned(model, folder / "best", meta)


def _scene(path: Path, h: int, w: int, hole: bool = False) -> Path:
    rng = np.random.default_rng(0)
    cube = rng.uniform(0.05, 0.5, (len(WL), h, w)).astype(np.float32)
    cube[:, : h // 2] += 0.3                                 # two regions, two spectra
    if hole:
        cube[:, :40, :40] = -9999.0                          # no valid band here
    return write_geotiff(path, cube, wavelength=WL, fwhm=np.full(len(WL), 20.0),
                         nodata=-9999.0)


def _predict(checkpoint, scene, out, *extra) -> int:
    return cli_main(["predict", str(checkpoint), str(scene), "--out", str(out), "--no-preview",
                     "--overlap", "0.25", *map(str, extra)])


@pytest.fixture(scope="module")
def predicted(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pred")
    scene = _scene(folder / "scene.tif", 300, 280, hole=True)
    assert _predict(checkpoint, scene, folder / "map.tif", "--probabilities",
                    folder / "probs.tif") == 0
    return folder


def test_outputs_are_cloud_optimized_geotiffs(predicted):
    for name in ("map.tif", "probs.tif"):
        with rasterio.open(predicted / name) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
            assert ds.block_shapes[0] == (256, 256)
            assert ds.overviews(1) == [2]                     # internal, down to one tile
            assert ds.crs.to_epsg() == 32611
    assert not list(predicted.glob(".*partial*"))            # the staging file is gone


def test_probabilities_are_float16_bands_that_sum_to_one_and_match_the_map(predicted):
    with rasterio.open(predicted / "probs.tif") as ds:
        assert ds.count == K and ds.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"
        assert ds.descriptions == ("p(water)", "p(crop)", "p(urban)")
        probs = ds.read()
    with rasterio.open(predicted / "map.tif") as ds:
        labels = ds.read(1)
    valid = labels != 255
    assert np.array_equal(probs.astype(np.float16).astype(np.float32), probs, equal_nan=True)
    np.testing.assert_allclose(probs[:, valid].sum(0), 1.0, atol=3e-3)
    assert np.isnan(probs[:, ~valid]).all()
    agree = (probs[:, valid].argmax(0) == labels[valid]).mean()
    assert agree > 0.999                                      # float16 rounding of near-ties
    assert len(np.unique(labels[valid])) > 1


def test_pixels_without_a_valid_band_get_the_ignore_index(predicted, checkpoint, tmp_path):
    with rasterio.open(predicted / "map.tif") as ds:
        assert (ds.dtypes[0], ds.nodata) == ("uint8", 255)
        labels = ds.read(1)
    assert (labels[:40, :40] == 255).all() and (labels[40:, 40:] < K).all()
    scene = predicted / "scene.tif"
    assert _predict(checkpoint, scene, tmp_path / "m1.tif", "--ignore-index", -1) == 0
    with rasterio.open(tmp_path / "m1.tif") as ds:
        assert (ds.dtypes[0], ds.nodata) == ("int16", -1)
        other = ds.read(1)
    assert np.array_equal(other == -1, labels == 255)
    assert np.array_equal(other[labels != 255], labels[labels != 255])


def test_ignore_index_may_not_be_a_class():
    assert class_map_dtype(3, 255) == "uint8" and class_map_dtype(300, 65535) == "uint16"
    assert class_map_dtype(3, -1) == "int16"
    with pytest.raises(ValueError, match="ignore_index=2 is a class index"):
        class_map_dtype(3, 2)


def _reads(monkeypatch) -> Counter:
    seen: Counter = Counter()
    original = RasterReader.read

    def counting(self, row, col, h, w):
        seen[(self.path, row, col, h, w)] += 1
        return original(self, row, col, h, w)
    monkeypatch.setattr(RasterReader, "read", counting)
    return seen


def test_each_window_is_read_once(checkpoint, tmp_path, monkeypatch):
    scene = _scene(tmp_path / "scene.tif", 80, 72)
    seen = _reads(monkeypatch)
    assert _predict(checkpoint, scene, tmp_path / "map.tif", "--tile", 32) == 0
    rows, cols = [0, 24, 48], [0, 24, 40]                    # stride 24, last window flush
    assert sorted((r, c) for _, r, c, _, _ in seen) == [(r, c) for r in rows for c in cols]
    assert set(seen.values()) == {1}


def _peak_bytes(checkpoint, scene, out: Path, monkeypatch) -> tuple[int, int]:
    """(Python-side peak bytes, largest read in pixels) of predicting `scene`."""
    model, meta = load_finetuned(checkpoint)
    info = RasterReader.open(scene, normalization={"normalize": "none"})
    seen = _reads(monkeypatch)
    tracemalloc.start()
    predict_scene(model, meta, [info], out, 64, 0.25, 8, torch.device("cpu"),
                  probabilities=out.with_name(out.stem + "_probs.tif"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, max(h * w for _, _, _, h, w in seen)


def test_memory_follows_a_strip_of_windows_not_the_scene(checkpoint, tmp_path, monkeypatch):
    """Scenes of 256 and 1536 rows (x 320 columns x 6 float32 bands: 2 and 11.8 MB) read
    window by window: no read is larger than a window, and the Python-side peak (numpy
    buffers: reads, the blending strip, output rows) does not grow with the scene's height,
    so a scene larger than RAM needs only a strip of it."""
    small, read_small = _peak_bytes(checkpoint, _scene(tmp_path / "small.tif", 256, 320),
                                    tmp_path / "small_map.tif", monkeypatch)
    tall, read_tall = _peak_bytes(checkpoint, _scene(tmp_path / "tall.tif", 1536, 320),
                                  tmp_path / "tall_map.tif", monkeypatch)
    assert read_small == read_tall == 64 * 64
    assert tall < 1.25 * small, f"peak {tall / 1e6:.2f} MB (tall) vs {small / 1e6:.2f} MB"
    assert tall < (1536 * 320 * 6 * 4) / 4
    with rasterio.open(tmp_path / "tall_map_probs.tif") as ds:
        assert ds.shape == (1536, 320)


def test_bf16_prediction_agrees_with_fp32(checkpoint, tmp_path):
    """--precision bf16 autocasts the windows' forward pass; softmax, blending and argmax stay
    fp32, so the map differs from fp32's only where classes nearly tie."""
    scene = _scene(tmp_path / "scene.tif", 64, 64)
    maps = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.tif"
        assert _predict(checkpoint, scene, out, "--precision", precision) == 0
        with rasterio.open(out) as ds:
            maps[precision] = ds.read(1)
    assert (maps["bf16"] == maps["fp32"]).mean() > 0.95

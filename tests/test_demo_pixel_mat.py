"""`specaware demo --mat`: the demo's labelled scenes of one sensor side by side as a .mat pixel
benchmark that `data.benchmark=specaware_demo` reads back with its wavelengths and classes."""
import json

import numpy as np
import pytest
import rasterio

from specaware.demo.pixel_mat import write_pixel_benchmark
from specaware.finetune.datasets.mat import get_benchmark, load_benchmark
from specaware.synth.spectra import CLASSES
from specaware.testing import write_envi

WL = [450.0, 550.0, 650.0, 850.0, 1600.0]


def _fake_demo(root, labels_of, sensor="aviris-ng", nodata_pixel=(0, 0)):
    """A demo folder holding data/synth/ scenes (ENVI cube + label GeoTIFF, 255 = unlabelled)."""
    synth = root / "data" / "synth"
    (synth / "images").mkdir(parents=True)
    (synth / "labels").mkdir()
    rows = []
    for i, labels in enumerate(labels_of):
        h, w = labels.shape
        cube = np.full((len(WL), h, w), 0.1 * (i + 1), np.float32)
        cube[:, nodata_pixel[0], nodata_pixel[1]] = -9999.0
        sid = f"synth{i:03d}_t1_{sensor}"
        write_envi(synth / "images" / f"{sid}.img", cube, wavelength=WL, nodata=-9999.0)
        with rasterio.open(synth / "labels" / f"{sid}_labels.tif", "w", driver="GTiff", width=w,
                           height=h, count=1, dtype="uint8", nodata=255) as dst:
            dst.write(labels.astype(np.uint8)[None])
        rows.append({"id": sid, "sensor": sensor, "date": "t1",
                     "image": f"images/{sid}.img", "labels": f"labels/{sid}_labels.tif"})
    manifest = {"classes": list(CLASSES), "scenes": rows}
    (synth / "synth_manifest.json").write_text(json.dumps(manifest))
    return root


def test_scenes_sit_side_by_side_with_classes_shifted_and_unlabelled_zero(tmp_path):
    a = np.array([[0, 0, 255], [4, 4, 4]])
    b = np.array([[6, 6, 6], [255, 0, 6]])
    demo = _fake_demo(tmp_path / "demo", [a, b])
    info = write_pixel_benchmark(demo, tmp_path / "px")
    assert info["shape"] == [2, 6, len(WL)]
    assert info["labelled"]["water"] == 2 and info["labelled"]["built"] == 3
    scene = load_benchmark("specaware_demo", info["image"], info["gt"], normalize="none")
    # the nodata pixel (0, 0) of each scene is unlabelled, so is the labels' 255
    expected = np.array([[-1, 0, -1, -1, 6, 6], [4, 4, 4, -1, 0, 6]])
    np.testing.assert_array_equal(scene.labels, expected)
    np.testing.assert_allclose(scene.scene.wavelength, WL)
    assert not scene.scene.approximate_wavelengths
    assert scene.class_names == list(CLASSES)
    # nodata filled with the scene's band mean of valid pixels, not -9999
    np.testing.assert_allclose(scene.scene.image[:, 0, 0], 0.1, rtol=1e-5)
    np.testing.assert_allclose(scene.scene.image[:, 0, 3], 0.2, rtol=1e-5)


def test_a_demo_without_the_sensor_names_what_it_holds(tmp_path):
    demo = _fake_demo(tmp_path / "demo", [np.zeros((2, 2))], sensor="enmap")
    with pytest.raises(ValueError, match=r"no labelled scene of sensor 'aviris-ng'.*enmap"):
        write_pixel_benchmark(demo, tmp_path / "px")
    with pytest.raises(FileNotFoundError, match="specaware demo"):
        write_pixel_benchmark(tmp_path / "nowhere", tmp_path / "px")


def test_the_benchmark_class_names_are_the_synthetic_classes():
    assert get_benchmark("specaware_demo").class_names == CLASSES


def test_demo_mat_flag_writes_the_benchmark_after_the_demo(tmp_path, monkeypatch, capsys):
    import argparse

    import specaware.demo.pipeline as pipeline
    from specaware.cli import demo as cli
    demo = _fake_demo(tmp_path / "demo", [np.array([[0, 4], [4, 6]])])
    monkeypatch.setattr(pipeline, "run", lambda plan, out, fresh: 0)   # stages already done
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--quick", "--out", str(demo), "--mat", str(tmp_path / "px")])
    assert cli.main(args) == 0
    assert (tmp_path / "px" / "demo_scene.mat").is_file()
    assert "labelled pixels: bare_soil 2, built 1\n" in capsys.readouterr().out   # (0, 0) nodata

"""`specaware predict` on a bad day: damaged checkpoints and unreadable scenes are one error
line naming the file (exit 1, `--debug` shows the traceback), and a scene far outside the value
range the model was trained on is predicted with a warning, also written into the map."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from specaware.cli import main as cli_main
from specaware.finetune import api
from specaware.finetune.checkpoint import build_head, model_meta, save_finetuned
from specaware.finetune.config import ModelConfig
from specaware.testing import write_geotiff

WL = np.array([450.0, 550.0, 650.0, 850.0, 1600.0, 2200.0])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A fine-tuned segmentation checkpoint (untrained head) whose data were reflectance."""
    folder = tmp_path_factory.mktemp("ckpt")
    encoder = api.build_encoder(None, "specaware_debug")
    cfg = ModelConfig(variant="specaware_debug")
    model = build_head("segmentation", encoder, 3, cfg)
    data = {"tile": 16, "patch": 8,
            "normalization": {"normalize": "none", "range": [0.01, 0.6]}}
    meta = model_meta("segmentation", 3, ["a", "b", "c"], cfg, encoder, data)
    return save_finetuned(model, folder / "best", meta)


def _scene(path: Path, scale: float = 1.0) -> Path:
    cube = np.random.default_rng(0).uniform(0.05, 0.5, (len(WL), 16, 16)).astype(np.float32)
    return write_geotiff(path, cube * np.float32(scale), wavelength=WL, fwhm=np.full(6, 20.0))


def _predict(checkpoint, scene, out, *extra) -> int:
    return cli_main(["predict", str(checkpoint), str(scene), "--out", str(out), "--no-preview",
                     "--device", "cpu", *extra])


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "error: " in line]


@pytest.mark.parametrize("damage", ["missing_json", "truncated_weights", "random_weights"])
def test_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, checkpoint, capsys, damage):
    ckpt = tmp_path / "best.safetensors"
    ckpt.write_bytes(checkpoint.read_bytes())
    if damage != "missing_json":
        ckpt.with_suffix(".json").write_text(checkpoint.with_suffix(".json").read_text())
    if damage == "truncated_weights":
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    elif damage == "random_weights":
        ckpt.write_bytes(np.random.default_rng(1).bytes(2048))
    assert _predict(ckpt, _scene(tmp_path / "s.tif"), tmp_path / "map.tif") == 1
    lines = _error_lines(capsys)
    assert len(lines) == 1 and str(tmp_path / "best.") in lines[0]


@pytest.mark.parametrize("kind", ["text", "empty", "truncated"])
def test_unreadable_scene_is_one_line_naming_it(tmp_path, checkpoint, capsys, kind):
    scene = tmp_path / "scene.tif"
    if kind == "text":
        scene.write_text("this is not a raster\n")
    elif kind == "empty":
        scene.write_bytes(b"")
    else:
        data = _scene(tmp_path / "whole.tif").read_bytes()
        scene.write_bytes(data[: len(data) // 3])
    assert _predict(checkpoint, scene, tmp_path / "map.tif") == 1
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "scene.tif" in lines[0]
    with pytest.raises(rasterio.errors.RasterioIOError):    # --debug: the real traceback
        _predict(checkpoint, scene, tmp_path / "map.tif", "--debug")


def test_scene_far_outside_the_training_range_is_predicted_with_a_warning(
        tmp_path, checkpoint, caplog):
    normal = _predict(checkpoint, _scene(tmp_path / "ok.tif"), tmp_path / "ok_map.tif")
    with rasterio.open(tmp_path / "ok_map.tif") as ds:
        assert normal == 0 and "SPECAWARE_WARNING" not in ds.tags()
    with caplog.at_level("WARNING"):
        code = _predict(checkpoint, _scene(tmp_path / "huge.tif", 1e30), tmp_path / "map.tif")
    assert code == 0
    warned = [r.message for r in caplog.records if "far outside" in r.message]
    assert len(warned) == 1 and "huge.tif" in warned[0] and "0.01..0.6" in warned[0]
    with rasterio.open(tmp_path / "map.tif") as ds:
        assert "far outside" in ds.tags()["SPECAWARE_WARNING"]


def test_fit_normalization_records_the_range_the_model_saw():
    from specaware.data.normalize import fit_scene
    cube = np.linspace(0, 5000, 6 * 10 * 10, dtype=np.float32).reshape(6, 10, 10)
    how = fit_scene(cube, "auto")
    assert how["scale"] == 1e-4
    lo, hi = how["range"]
    assert 0 <= lo < 0.01 and 0.49 < hi <= 0.5
    assert json.loads(json.dumps(how)) == how       # travels in the checkpoint's JSON

"""End to end as a user runs it: `specaware finetune` with `--init both` on generated GeoTIFFs
(segmentation, cross-sensor change, pixel classification), then `specaware predict` on a scene.
One small run per task is shared by the assertions (module-scoped fixtures)."""
import argparse
import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from fixtures import change_pair, write_export, write_geotiff, write_mask, write_segmentation_pair

from specaware.cli import finetune as cli
from specaware.cli import predict as predict_cli
from specaware.data.collate import collate
from specaware.finetune import predict
from specaware.finetune.checkpoint import load_finetuned
from specaware.finetune.metrics import classification_metrics

CONFIGS = Path(__file__).parents[2] / "configs" / "finetune"
SMALL = ["optim.epochs=2", "optim.batch_size=4", "model.decoder_width=16", "protocol.seeds=[0]",
         "protocol.tile=16", "protocol.val_fraction=0.25", "protocol.test_fraction=0.25"]


def _run(parser_module, argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    parser_module.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert parser_module.main(parser.parse_args([str(a) for a in argv])) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    path, _ = write_export(tmp_path_factory.mktemp("export"))
    return path


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory, export):
    folder = tmp_path_factory.mktemp("seg")
    image, mask = write_segmentation_pair(folder, h=48, w=48)
    out = folder / "run"
    printed = _run(cli, ["--task", "segmentation", "--config", CONFIGS / "segmentation.yaml",
                         "--init", "both", "--checkpoint", export, "--out", out, "--no-progress",
                         f"data.images=[{image}]", f"data.masks=[{mask}]", *SMALL])
    return {"image": image, "mask": mask, "out": out, "printed": printed, "export": export}


def test_init_both_prints_pretrained_and_random_columns(segmentation_run):
    lines = segmentation_run["printed"].splitlines()
    header = next(line for line in lines if line.startswith("task"))
    assert header.split() == ["task", "metric", "pretrained", "random"]
    rows = [line.split() for line in lines if line.startswith("segmentation")]
    assert [r[1] for r in rows] == ["miou", "oa", "mean_f1"]
    assert all(r.count("±") == 2 for r in rows)
    results = json.loads((segmentation_run["out"] / "results.json").read_text())
    assert set(results["results"]) == {"pretrained", "random"}


def test_each_init_keeps_its_checkpoint_and_encoder_source(segmentation_run):
    for init, source in (("pretrained", str(segmentation_run["export"])), ("random", None)):
        run = segmentation_run["out"] / init / "seed0"
        meta = json.loads((run / "best.json").read_text())
        assert meta["encoder"]["pretrained_from"] == source and meta["task"] == "segmentation"
        model, _ = load_finetuned(run / "best.safetensors")
        assert not model.training


def test_confusion_matrix_csv_matches_the_reported_metrics(segmentation_run):
    run = segmentation_run["out"] / "pretrained" / "seed0"
    with open(run / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "reference\\predicted" and len(rows) == len(rows[0])
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    reported = json.loads((run / "metrics.json").read_text())
    assert cm.sum() > 0
    assert classification_metrics(cm)["miou"] == pytest.approx(reported["miou"])
    with rasterio.open(run / "confusion.png") as png:
        assert png.count >= 3 and png.width > 200


def test_predict_map_is_the_models_own_argmax_on_each_window(segmentation_run, tmp_path):
    # windows that tile the 48 x 48 scene exactly (overlap 0): the written map must be, pixel
    # for pixel, the argmax of the fine-tuned model run directly on each window
    ckpt = segmentation_run["out"] / "pretrained" / "seed0" / "best.safetensors"
    out = tmp_path / "map.tif"
    _run(predict_cli, [ckpt, segmentation_run["image"], "--out", out, "--tile", "16",
                       "--overlap", "0", "--no-preview"])
    with rasterio.open(out) as dst:
        written = dst.read(1)
    model, meta = load_finetuned(ckpt)
    reader = predict.open_scenes(meta, str(segmentation_run["image"]))[0]
    expected = np.zeros_like(written)
    with torch.no_grad():
        for r in range(0, 48, 16):
            for c in range(0, 48, 16):
                batch = collate([reader.read(r, c, 16, 16)])
                expected[r:r + 16, c:c + 16] = model(batch).argmax(1)[0].numpy()
    assert (written == expected).all()
    assert len(np.unique(expected)) >= 2         # a real map, not one class everywhere


def test_predict_keeps_crs_and_transform_and_writes_a_preview(segmentation_run, tmp_path):
    ckpt = segmentation_run["out"] / "pretrained" / "seed0" / "best.safetensors"
    out = tmp_path / "map.tif"
    printed = _run(predict_cli, [ckpt, segmentation_run["image"], "--out", out, "--tile", "16",
                             "--overlap", "0.5"])
    assert str(out) in printed
    with rasterio.open(segmentation_run["image"]) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.height, dst.width, dst.count) == (src.height, src.width, 1)
        labels = dst.read(1)
    assert labels.max() < 3
    with rasterio.open(out.with_suffix(".png")) as png:   # map enlarged, legend beside it
        assert png.height >= labels.shape[0] and png.width > png.height and png.count >= 3
        rgb = png.read([1, 2, 3])
    assert len(np.unique(rgb.reshape(3, -1), axis=1)) >= 3   # not a blank figure


@pytest.fixture(scope="module")
def change_run(tmp_path_factory, export):
    """t1: 12 bands 450-2400 nm; t2: 7 bands 500-2300 nm of another sensor; 0/1 change mask."""
    folder = tmp_path_factory.mktemp("change")
    wl1, wl2 = np.linspace(450, 2400, 12), np.linspace(500, 2300, 7)
    c1, c2, mask = change_pair(40, 40, wl1, wl2, seed=3)
    t1 = write_geotiff(folder / "t1.tif", np.moveaxis(c1, -1, 0).astype(np.float32).copy(), wl1)
    t2 = write_geotiff(folder / "t2.tif", np.moveaxis(c2, -1, 0).astype(np.float32).copy(), wl2)
    m = write_mask(folder / "change.tif", mask)
    out = folder / "run"
    printed = _run(cli, ["--task", "change", "--config", CONFIGS / "change.yaml", "--init",
                         "pretrained", "--checkpoint", export, "--out", out, "--no-progress",
                         f"data.images=[{t1}]", f"data.images2=[{t2}]", f"data.masks=[{m}]",
                         *SMALL])
    return {"t1": t1, "t2": t2, "mask": mask, "out": out, "printed": printed}


def test_change_runs_with_dates_from_different_sensors(change_run, tmp_path):
    assert "change" in change_run["printed"] and "kappa" in change_run["printed"]
    ckpt = change_run["out"] / "pretrained" / "seed0" / "best.safetensors"
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["class_names"] == ["no change", "change"]   # 0 kept as "no change"
    out = tmp_path / "change.tif"
    _run(predict_cli, [ckpt, change_run["t1"], "--scene2", change_run["t2"], "--out", out,
                   "--no-preview"])
    with rasterio.open(out) as dst, rasterio.open(change_run["t1"]) as src:
        assert dst.transform == src.transform and dst.read(1).max() <= 1
    assert not out.with_suffix(".png").exists()


def test_pixel_classifier_predicts_every_pixel(tmp_path, export):
    image, mask = write_segmentation_pair(tmp_path, h=24, w=24, bands=8)
    out = tmp_path / "run"
    _run(cli, ["--task", "classification", "--checkpoint", export, "--out", out, "--no-progress",
               "data.kind=geotiff", f"data.images=[{image}]", f"data.masks=[{mask}]",
               "protocol.per_class=8", "protocol.patch=16", "optim.epochs=1",
               "optim.batch_size=8", "protocol.seeds=[0]"])
    ckpt = out / "pretrained" / "seed0" / "best.safetensors"
    _run(predict_cli, [ckpt, image, "--out", tmp_path / "pixels.tif", "--tile", "12"])
    with rasterio.open(tmp_path / "pixels.tif") as dst:
        labels = dst.read(1)
    assert labels.shape == (24, 24) and labels.max() < 3 and (labels != dst.nodata).all()


def test_predict_writes_nodata_where_the_scene_has_no_valid_band(segmentation_run, tmp_path):
    with rasterio.open(segmentation_run["image"]) as src:
        data, wl = src.read(), [float(src.tags(i)["wavelength"]) for i in range(1, src.count + 1)]
    data[:, 5:20, 10:30] = np.nan
    holed = write_geotiff(tmp_path / "holed.tif", data, np.array(wl))
    ckpt = segmentation_run["out"] / "pretrained" / "seed0" / "best.safetensors"
    _run(predict_cli, [ckpt, holed, "--out", tmp_path / "holed_map.tif", "--tile", "16",
                   "--no-preview"])
    with rasterio.open(tmp_path / "holed_map.tif") as dst:
        labels, nodata = dst.read(1), dst.nodata
    assert (labels[5:20, 10:30] == nodata).all()
    assert (labels != nodata).sum() == labels.size - 15 * 20


def test_predict_names_its_flags_when_the_scene_has_no_wavelengths(segmentation_run, tmp_path):
    with rasterio.open(segmentation_run["image"]) as src:
        data = src.read()
    bare = write_geotiff(tmp_path / "bare.tif", data, None)
    ckpt = segmentation_run["out"] / "pretrained" / "seed0" / "best.safetensors"
    parser = argparse.ArgumentParser()
    predict_cli.add_arguments(parser)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = predict_cli.main(parser.parse_args([str(ckpt), str(bare), "--out",
                                                 str(tmp_path / "x.tif")]))
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1
    assert str(bare) in lines[0] and "--sensor NAME" in lines[0] and "--wavelength FILE" in lines[0]


def test_blend_weights_peak_in_the_centre_and_never_vanish():
    w = predict.blend_weights(8)
    assert w.shape == (8, 8) and w.min() > 0 and w[3:5, 3:5].min() == w.max() == 1.0
    assert w[0, 0] < w[0, 3] < w[3, 3]


def test_benchmark_configs_run_on_mat_files(tmp_path, export):
    """indian_pines.yaml (pixel patches, % split) and bay_area.yaml (tiles keeping the split's
    pixels) on generated files with the public keys, each with a two-seed mean ± std."""
    from fixtures import write_bay_area, write_indian_pines
    image, gt = write_indian_pines(tmp_path, h=16, w=16, k=4)
    fast = ["optim.epochs=1", "optim.batch_size=16", "protocol.seeds=[0,1]", "--checkpoint",
            export, "--no-progress"]
    printed = _run(cli, ["--config", CONFIGS / "indian_pines.yaml", "--out", tmp_path / "ip",
                         f"data.image={image}", f"data.gt={gt}", "protocol.patch=16", *fast])
    assert [line.split()[1] for line in printed.splitlines()
            if line.startswith("classification")] == ["oa", "aa", "kappa"]
    meta = json.loads((tmp_path / "ip" / "pretrained" / "seed1" / "best.json").read_text())
    assert meta["data"]["split"]["train"] > 0 and meta["class_names"][0] == "Alfalfa"
    t1, t2, change = write_bay_area(tmp_path, h=16, w=16)
    printed = _run(cli, ["--config", CONFIGS / "bay_area.yaml", "--out", tmp_path / "bay",
                         f"data.image={t1}", f"data.image2={t2}", f"data.gt={change}",
                         "protocol.tile=16", "protocol.fraction=0.3", *fast])
    assert "kappa" in printed
    results = json.loads((tmp_path / "bay" / "results.json").read_text())
    assert results["seeds"] == [0, 1] and "f1" in results["results"]["pretrained"]


def test_houston_fixed_split_tests_on_every_pixel_of_the_test_map(tmp_path, export):
    """houston2013_fixed.yaml on a generated TRLabel.mat / TSLabel.mat pair: every labelled pixel
    of the test map, and only those, is scored; training never sees one of them."""
    from fixtures import write_houston_split
    from scipy.io import loadmat
    image, train, test = write_houston_split(tmp_path, h=16, w=16, k=3)
    out = tmp_path / "run"
    _run(cli, ["--task", "classification", "--config", CONFIGS / "houston2013_fixed.yaml",
               "--checkpoint", export, "--out", out, "--no-progress", f"data.image={image}",
               f"data.gt={train}", f"data.test_gt={test}", "protocol.split=fixed",
               "protocol.patch=16", "optim.epochs=1", "optim.batch_size=32",
               "protocol.seeds=[0]"])
    n_test = int((loadmat(test)["TSLabel"] > 0).sum())
    n_train = int((loadmat(train)["TRLabel"] > 0).sum())
    run = out / "pretrained" / "seed0"
    split = json.loads((run / "best.json").read_text())["data"]["split"]
    assert split["test"] == n_test and split["train"] + split["val"] == n_train
    with open(run / "confusion.csv") as f:
        cm = np.array([[int(v) for v in r[1:]] for r in list(csv.reader(f))[1:]])
    assert cm.sum() == n_test and cm.shape == (15, 15)

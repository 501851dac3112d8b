"""The `specaware` command as a new user meets it: version, help, pipes, config round trips,
typos, globs and a shard run that keeps nothing."""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from specaware import __version__
from specaware.cli import COMMANDS, main
from specaware.config import build
from specaware.finetune.config import FinetuneConfig
from specaware.testing import sensor_bands, write_geotiff
from specaware.training.config import load_config


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0
    assert capsys.readouterr().out.strip() == f"specaware {__version__}"


def test_python_dash_m_is_the_same_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "specaware", "sensors", "landsat-9"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "landsat-9" in done.stdout and "nm" in done.stdout.lower()


def test_top_level_help_has_one_line_per_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, help_ in COMMANDS.items():
        lines = [ln for ln in out.splitlines() if ln.split()[:1] == [name]]
        assert len(lines) == 1 and help_ in lines[0], name


def test_mistyped_command_names_the_closest_one(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["pretrian"])
    assert ex.value.code == 2
    assert "did you mean 'pretrain'" in capsys.readouterr().err


def test_closed_pipe_ends_without_a_traceback():
    # the reader has already left when the table is written, as with `specaware sensors | head`
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "specaware.cli", "sensors"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


def test_pretrain_print_config_is_a_config_file_again(tmp_path, capsys):
    shards = tmp_path / "shards"
    assert main(["pretrain", "--config", "configs/pretrain/debug.yaml", f"data.shards={shards}",
                 "train.steps=7", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "# deepspeed" in text                       # the derived dict rides along as comments
    saved = tmp_path / "resolved.yaml"
    saved.write_text(text)
    again = load_config([saved])
    assert again == load_config(["configs/pretrain/debug.yaml"],
                                [f"data.shards={shards}", "train.steps=7"])
    assert again.train.steps == 7


def test_finetune_print_config_is_a_config_file_again(tmp_path, capsys):
    assert main(["finetune", "configs/finetune/indian_pines.yaml", "optim.epochs=3",
                 "--print-config"]) == 0
    saved = tmp_path / "ft.yaml"
    saved.write_text(capsys.readouterr().out)
    again = build(FinetuneConfig, [saved])
    assert again == build(FinetuneConfig, ["configs/finetune/indian_pines.yaml"],
                          ["optim.epochs=3"])
    assert yaml.safe_load(saved.read_text())["optim"]["epochs"] == 3


def test_mistyped_model_name_suggests_the_registered_one(capsys):
    assert main(["pretrain", "configs/pretrain/debug.yaml", "model.name=specaware_smal",
                 "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "config key 'model.name'" in err and "did you mean 'specaware_small'" in err


def test_file_list_keys_expand_globs_in_name_order(tmp_path, capsys):
    for name in ("b.tif", "a.tif", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert main(["finetune", "data.kind=geotiff", f"data.images={tmp_path}/*.tif",
                 "--print-config"]) == 0
    images = yaml.safe_load(capsys.readouterr().out)["data"]["images"]
    assert images == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]


def test_glob_matching_nothing_names_the_key(tmp_path, capsys):
    assert main(["finetune", "data.kind=geotiff", f"data.masks={tmp_path}/*.tif",
                 "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "data.masks" in err and "matches no file" in err


def test_shard_that_keeps_no_tile_exits_nonzero_and_says_why(tmp_path, capsys):
    # Landsat digital numbers read as L2 reflectance: every value is far above the cap
    wavelength, fwhm, _ = sensor_bands("landsat-8")
    cube = np.full((len(wavelength), 64, 64), 9000.0, dtype=np.float32)
    scene = write_geotiff(tmp_path / "dn.tif", cube, wavelength=wavelength, fwhm=fwhm)
    rc = main(["shard", str(scene), "--out", str(tmp_path / "out"), "--tile", "32",
               "--sensor", "landsat-8", "--level", "L2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "wrote no tile" in err and "--scale" in err


def test_bench_output_drops_only_the_profilers_trace_lines():
    from specaware.cli.bench import is_profiler_noise
    assert is_profiler_noise("USDT:2026-12-02 00:35:30 23942:23942 "
                             "SyncActivityProfilerHandler.cpp:52] profiler_start\n")
    assert is_profiler_noise("USDT:2026-12-02 00:35:33 1:1 SyncActivityProfilerHandler.cpp:59] "
                             "profiler_stop")
    assert not is_profiler_noise("  time ratio specaware/plain = 1.12 (target <= 1.5: met)")
    assert not is_profiler_noise("ERROR:2026-12-02 00:35:33 1:1 CuptiActivityProfiler.cpp:1] "
                                 "profiler_start failed")


def test_missing_checkpoint_or_damaged_scene_is_one_line_not_a_traceback(tmp_path, capsys):
    junk = tmp_path / "scene.tif"
    junk.write_text("not a raster")
    assert main(["predict", str(tmp_path / "gone.safetensors"), str(junk),
                 "--out", str(tmp_path / "map.tif")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "specaware predict: error:" in err and "gone.json" in err and "--debug" in err
    assert main(["shard", str(junk), "--out", str(tmp_path / "s"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(junk) in err


def test_debug_flag_shows_the_traceback(tmp_path):
    junk = tmp_path / "scene.tif"
    junk.write_text("not a raster")
    with pytest.raises(Exception, match="not recognized"):
        main(["shard", str(junk), "--out", str(tmp_path / "s"), "--quiet", "--debug"])


def test_full_disk_is_said_in_those_words():
    import errno

    from specaware.cli import one_line
    err = OSError(errno.ENOSPC, "No space left on device", "/runs/a/step_10/model.pt")
    assert one_line(err) == "no space left on device while writing /runs/a/step_10/model.pt"

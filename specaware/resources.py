"""Files the code reads at run time that are not Python: DeepSpeed presets, the demo's and the
example configs, the benchmark scripts. They ship inside the package (`specaware/configs/`,
`specaware/bench/`), so a regular `pip install` finds them from any folder; the repository's
top-level `configs/` and `bench/` are links to the same folders, for users reading a clone."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
BENCH_DIR = PACKAGE_DIR / "bench"


def config_path(*parts: str) -> Path:
    """A shipped config file or folder, e.g. `config_path("deepspeed", "zero2.yaml")`."""
    return CONFIG_DIR.joinpath(*parts)


def resolve_config_file(name: str | Path) -> Path:
    """A config named on the command line: the file itself when it exists, else the shipped
    example of that relative name (`configs/pretrain/base.yaml` or `pretrain/base.yaml` work
    from any folder after a regular install). Unknown names come back unchanged, so the caller's
    'no such file' error names what the user typed."""
    path = Path(name)
    if path.exists():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    shipped = CONFIG_DIR.joinpath(*parts) if parts else CONFIG_DIR
    return shipped if parts and shipped.is_file() else path

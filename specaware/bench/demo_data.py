"""The demo data the fine-tuning benchmarks measure on: a folder the user names, or a
`specaware demo --quick` run made for the benchmark."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def demo_folder(given: Path | None, tmp: Path) -> Path:
    """`given` when set; otherwise run `specaware demo --quick` into `tmp/demo` and return it."""
    if given is not None:
        return given
    demo = Path(tmp) / "demo"
    subprocess.run([sys.executable, "-m", "specaware.cli", "demo", "--quick", "--out", str(demo)],
                   check=True, stdout=subprocess.DEVNULL)
    return demo

"""glibc malloc tuning for CPU steps: applied where glibc is, refused on request.

Run in a child process: the setting is process-wide and must not leak into the test session.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import specaware.runtime as runtime

# the module file alone (stdlib only), so the child does not pay for importing torch
CALL = (f"import importlib.util as u; s = u.spec_from_file_location('rt', {runtime.__file__!r}); "
        f"m = u.module_from_spec(s); s.loader.exec_module(m); print(m.tune_cpu_malloc())")


def run_child(**env) -> str:
    out = subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True, timeout=60)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc knobs are Linux-only")
def test_tuning_applies_on_glibc():
    if runtime._glibc() is None:
        pytest.skip("not glibc")
    assert run_child() == "True"


def test_environment_can_turn_it_off():
    assert run_child(SPECAWARE_MALLOC="system") == "False"

#!/usr/bin/env python3
"""Which torch build `make` installs: prints the pip arguments, one per line.

Runs before torch exists, so it uses the standard library only. The rule:
- `TORCH_SPEC` set: exactly that requirement (plus `--index-url TORCH_INDEX_URL` when set);
- an NVIDIA driver on the machine (`nvidia-smi -L` lists a GPU, or /proc/driver/nvidia exists):
  `torch==TORCH_VERSION` from the package index, whose Linux wheels are CUDA builds;
- otherwise, on Linux x86_64: the CPU build `torch==TORCH_VERSION+cpu`, with PyTorch's CPU wheel
  index as an extra index (a plain `pip install torch` would pull a multi-GB CUDA build that a
  CPU machine cannot use); elsewhere (macOS, Linux aarch64) the index's wheels are CPU builds.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

DEFAULT_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def nvidia_driver_present() -> bool:
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def torch_pip_args(env: dict, gpu: bool, system: str, machine: str) -> list[str]:
    """The pip arguments for torch on a machine described by the arguments (pure: tested)."""
    version = env.get("TORCH_VERSION") or DEFAULT_VERSION
    index = env.get("TORCH_INDEX_URL")
    if env.get("TORCH_SPEC"):
        return [env["TORCH_SPEC"]] + (["--index-url", index] if index else [])
    if gpu or system != "Linux" or machine not in ("x86_64", "AMD64"):
        return [f"torch=={version}"] + (["--index-url", index] if index else [])
    return [f"torch=={version}+cpu", "--extra-index-url", index or CPU_INDEX]


def main() -> int:
    args = torch_pip_args(dict(os.environ), nvidia_driver_present(), platform.system(),
                          platform.machine())
    print("\n".join(args))
    print(f"torch_spec: installing {' '.join(args)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Process settings that make CPU training steps fast: glibc malloc keeps freed memory.

Why: a step of a small SpecAware model on the CPU allocates and frees tensors of tens of MB
(the [b, c, n, p] pixels of a tile at 224 bands: 4 tiles of 128 px are 59 MB each). glibc serves
every allocation above its mmap threshold (at most 32 MB by default, adapting upwards) with a
fresh `mmap` and hands it back with `munmap` on free, so each such tensor pays page faults on
first touch, about as long as the arithmetic itself. Raising the mmap threshold and the trim
threshold makes glibc reuse its heap instead; on the 4 x 224 x 128 px step of specaware_debug
this roughly halves the CPU time (measured with time.process_time, same results bit for bit).

The cost: the process keeps its peak heap instead of returning it to the system after a step,
which a training process reaches every step anyway. This is a process-wide setting, so the
model never applies it by itself: entry points call `tune_cpu_malloc()` once, early (the
trainer and benchmarks on CPU; `SPECAWARE_MALLOC=system` in the environment turns it off).
Only glibc on Linux has these knobs; elsewhere the call does nothing and returns False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MB = 1 << 20


def _glibc():
    """The C library when it is glibc (has gnu_get_libc_version), else None."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version        # attribute lookup fails on musl and others
    except (OSError, AttributeError):
        return None
    return libc


def tune_cpu_malloc(mmap_threshold_mb: int = 1024, trim_threshold_mb: int = 2047,
                    top_pad_mb: int = 64) -> bool:
    """Let glibc keep and reuse large freed blocks (see the module doc). Returns True when the
    settings were applied. Sizes in MiB; call once, before the first training step."""
    if os.environ.get("SPECAWARE_MALLOC", "").lower() == "system":
        log.info("SPECAWARE_MALLOC=system: leaving glibc malloc settings alone")
        return False
    libc = _glibc()
    if libc is None:
        log.info("not glibc: malloc tuning skipped")
        return False
    ok = all(libc.mallopt(param, mb * MB) == 1 for param, mb in (
        (M_MMAP_THRESHOLD, mmap_threshold_mb), (M_TRIM_THRESHOLD, trim_threshold_mb),
        (M_TOP_PAD, top_pad_mb)))
    if not ok:
        log.warning("glibc refused a malloc setting; CPU steps may spend time in page faults")
    return ok

"""Keep freed memory in the process for reuse (glibc ``mallopt``), so large tensors stop page-faulting.

glibc's ``malloc`` serves every block above its mmap threshold (dynamic, from 128 KiB) with a fresh
``mmap`` and gives it back with ``munmap`` when freed; below it, memory freed at the top of the heap
is returned to the kernel once it exceeds the trim threshold. A training step allocates and frees
the same large activations and gradients every update (a ``(4096, 1024)`` FFN activation is 16 MiB),
so each of them is zero-filled page by page by the kernel again: on a 2-core CPU the page faults of
a freshly allocated matmul output cost ~25% of the matmul (docs: ``matmul_peak_gflops_fresh_output``
in ``scripts/benchmark.py``). Raising both thresholds makes freed blocks stay in the heap and be reused
by the next update, which is what PyTorch's caching allocator does on GPUs.

It removes nearly all minor page faults of an update at no cost in peak RSS; the speed-up is
measured in docs/performance.md ("Why the hot path looks as it does").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory(mmap_threshold: int = MAX_MMAP_THRESHOLD, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc to serve blocks up to ``mmap_threshold`` bytes from the heap and to keep up to
    ``trim_threshold`` bytes of freed heap memory instead of returning it to the kernel.

    Process-wide; calling it again sets the thresholds again. Blocks larger than ``mmap_threshold``
    are still mmapped. Returns True when glibc accepted both settings, False on other C libraries
    and platforms (macOS, Windows, musl), where nothing changes.

    Raises:
        ValueError: when a threshold is negative or ``mmap_threshold`` exceeds 32 MiB (glibc's limit).
    """
    if not 0 <= mmap_threshold <= MAX_MMAP_THRESHOLD or trim_threshold < 0:
        raise ValueError(f"thresholds must be in [0, {MAX_MMAP_THRESHOLD}] and >= 0 bytes, "
                         f"got mmap {mmap_threshold}, trim {trim_threshold}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc: mallopt may not exist or mean something else
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    except (OSError, AttributeError):
        return False
    if ok:
        log.debug("glibc malloc: mmap threshold %d B, trim threshold %d B", mmap_threshold, trim_threshold)
    return ok

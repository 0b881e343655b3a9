"""nmt.train.allocator: freed large tensors are reused instead of page-faulting again."""
from __future__ import annotations

import subprocess
import sys

import pytest

from nmt.train.allocator import MAX_MMAP_THRESHOLD, keep_freed_memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from nmt.train.allocator import keep_freed_memory
    assert keep_freed_memory()
def update(step):
    # one training step: activations of sizes that change with the batch shape (4-28 MiB),
    # held together until backward, then all freed
    saved = [torch.empty((1 + (i + step) % 7) * 1024 * 1024 + 1000 * step).fill_(1.0) for i in range(12)]
    del saved
for step in range(5):
    update(step)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(20):
    update(step)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    default, keep = _page_faults("default"), _page_faults("keep")
    pages_per_step = 12 * 16 * 1024 * 1024 // 4096  # ~16 MiB per tensor on average
    # glibc's defaults give freed blocks back to the kernel, so later steps fault them in again
    assert default > pages_per_step // 2, f"expected glibc's defaults to page-fault ({default} faults)"
    assert keep * 4 < default, f"keep_freed_memory should reuse the heap: {keep} faults against {default}"


@glibc
def test_applies_on_glibc_and_can_be_called_again():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": MAX_MMAP_THRESHOLD + 1}, {"mmap_threshold": -1},
                                    {"trim_threshold": -5}])
def test_rejects_thresholds_glibc_would_refuse(kwargs):
    with pytest.raises(ValueError, match="thresholds"):
        keep_freed_memory(**kwargs)

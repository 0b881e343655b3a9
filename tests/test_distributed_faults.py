"""One rank's fault ends the whole distributed job, and ranks that disagree never train
(RELIABILITY.md R15, R18, R34): 2 Gloo processes under torchrun, a fault injected into one
(tests/helpers/fault_train.py); every process exits non-zero within 60 s of the fault."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_distributed import COMMON, _env

pytestmark = pytest.mark.slow  # four 2-process jobs (about a minute in all); CI runs them

HELPER = Path(__file__).resolve().parent / "helpers" / "fault_train.py"


@pytest.mark.parametrize("fault, message", [
    ("max_tokens", "train.max_tokens: 1024 -> 999"),  # R34: a node with another config
    ("validate", "injected failure in rank 0's validation"),  # R34: rank 0 fails while the others wait
    ("save", "No space left on device"),  # R18, R34: a full disk on rank 0 at save time
    ("oom", "out of memory"),  # R15: an OOM on one rank cannot be skipped alone
])
def test_a_fault_on_one_rank_ends_every_rank_within_a_minute(tmp_path, multi30k_dir, fault, message):
    """R15, R18, R34: the job exits non-zero, both processes are gone, within 60 s of the fault."""
    stamp = tmp_path / "fault.time"
    env = dict(_env(multi30k_dir), NMT_FAULT=fault, NMT_FAULT_STAMP=str(stamp))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HELPER),
               *COMMON, f"hydra.run.dir={tmp_path / 'run'}", f"data.tokenizer.cache_dir={tmp_path / 'spm'}",
               "train.max_steps=8", "train.valid_every_steps=4", "train.dist_timeout_minutes=5"]
    start = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    end = time.time()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the job did not fail:\n{output[-4000:]}"
    assert stamp.exists(), f"the fault was never injected:\n{output[-4000:]}"
    assert end - float(stamp.read_text()) < 60, f"the ranks took {end - float(stamp.read_text()):.0f} s to stop"
    assert message in output, output[-4000:]
    assert not (tmp_path / "run" / "results.json").exists()
    assert end - start < 200


def test_ranks_never_resume_from_different_checkpoints(tmp_path, multi30k_dir):
    """R34: on per-node storage rank 1's run directory lacks rank 0's newest checkpoint (it holds
    an older one). Rank 0 picks the checkpoint for every rank; rank 1 cannot load it, and the job
    stops naming both, instead of the two ranks silently training on from different states."""
    import shutil

    from test_cli_e2e import _script

    first = [*COMMON, f"hydra.run.dir={tmp_path / 'run'}", f"data.tokenizer.cache_dir={tmp_path / 'spm'}",
             "train.max_steps=4", "train.save_every_steps=2", "train.valid_every_steps=100", "train.keep_last=5",
             "train.max_epochs=1"]
    done = subprocess.run([_script("nmt-train"), *first], capture_output=True, text=True,
                          env=_env(multi30k_dir), cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (tmp_path / "run" / "results.json").unlink()  # "interrupted": the run resumes
    node2 = tmp_path / "node2"
    shutil.copytree(tmp_path / "run", node2)
    newest = sorted((node2 / "checkpoints").glob("step-*"))[-1]
    shutil.rmtree(newest)  # node 2 missed the last save
    env = dict(_env(multi30k_dir), NMT_FAULT="storage", NMT_FAULT_STAMP=str(tmp_path / "fault.time"),
               NMT_FAULT_RUN_DIR=str(node2))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HELPER),
               *first, "train.max_steps=8", "train.dist_timeout_minutes=5"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the ranks trained on from different checkpoints:\n{output[-4000:]}"
    assert f"ranks cannot all resume from {tmp_path / 'run' / 'checkpoints' / newest.name}" in output, output[-4000:]

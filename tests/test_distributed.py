"""Data-parallel training with torchrun on CPU (Gloo): 2 processes against 1 with the same global
batch, resume under DDP, and one run directory written by rank 0 alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.train.distributed import SINGLE, DistContext, owns_batch, per_rank_update_freq
from test_cli_e2e import _script

# the same tiny model with every dropout off, so one process and two see the same computation
COMMON = ["debug=tiny", "data.max_train_pairs=200", "model.dropout=0", "model.attention_dropout=0",
          "model.activation_dropout=0", "train.update_freq=2", "train.log_every_steps=1", "train.eval_test=false",
          "train.attention.sentences=0", "train.attention.stats_sentences=0", "train.progress_bar=false",
          "train.num_threads=1", "train.patience=0", "train.max_epochs=1000", "train.valid_every_steps=20"]


def test_batches_are_shared_out_by_rank_within_each_update():
    ranks = [DistContext(rank=r, world_size=2) for r in range(2)]
    owned = [[p for p in range(12) if owns_batch(p, 4, ctx)] for ctx in ranks]
    assert owned == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]  # every batch once, 2 per rank per update
    assert per_rank_update_freq(4, ranks[0]) == 2 and per_rank_update_freq(3, SINGLE) == 3
    with pytest.raises(ValueError, match="multiple of 2"):
        per_rank_update_freq(3, ranks[0])


def _command(nproc: int, run_dir: Path, tmp: Path, *extra: str) -> list[str]:
    overrides = [*COMMON, f"hydra.run.dir={run_dir}", f"data.tokenizer.cache_dir={tmp / 'spm'}", *extra]
    if nproc == 1:
        return [_script("nmt-train"), *overrides]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # = the torchrun script of this interpreter's torch
    return [*torchrun, "--standalone", f"--nproc_per_node={nproc}", "--no-python", _script("nmt-train"), *overrides]


def _env(data: Path) -> dict:
    return dict(os.environ, NMT_DATA_DIR=str(data), OMP_NUM_THREADS="1")


def _train(nproc: int, run_dir: Path, tmp: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(nproc, run_dir, tmp, *extra), capture_output=True, text=True, env=_env(data),
                          cwd=tmp, timeout=300)
    assert proc.returncode == 0, f"{nproc} process(es) failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def _losses(run_dir: Path) -> dict[int, float]:
    """``train/loss`` per step from the run's TensorBoard event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/loss")}


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = json.loads((run_dir / "checkpoints" / "checkpoints.json").read_text())
    return load_file(str(run_dir / "checkpoints" / index["latest"] / "model.safetensors"))


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, multi30k_dir):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _train(1, single, tmp_path, multi30k_dir, "train.max_steps=8")
    proc = _train(2, ddp, tmp_path, multi30k_dir, "train.max_steps=8")
    one, two = _losses(single), _losses(ddp)
    assert sorted(one) == sorted(two) == list(range(1, 9))
    np.testing.assert_allclose([two[s] for s in range(1, 9)], [one[s] for s in range(1, 9)], rtol=2e-5)
    assert one[8] < one[1]  # it learns
    w1, w2 = _final_weights(single), _final_weights(ddp)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5)
    # one run directory, written by rank 0 alone
    assert len(list(ddp.rglob("events.out.tfevents.*"))) == 1
    assert [p.name for p in ddp.iterdir() if p.is_dir()].count("checkpoints") == 1
    assert len(list(ddp.glob("*.log"))) == 1 and len(list(ddp.glob(".hydra"))) == 1
    log_text = next(ddp.glob("*.log")).read_text()
    assert log_text.count("run directory:") == 1 and "2 processes x 1 batches per update" in log_text
    assert "[rank 1]" not in log_text
    assert (ddp / "results.json").exists() and "Traceback" not in proc.stderr


def test_resume_under_ddp_equals_the_uninterrupted_run(tmp_path, multi30k_dir):
    """SIGTERM to torchrun: both ranks finish the update, rank 0 saves (with both ranks' RNG
    states), they exit 75; the same command resumes and ends where the uninterrupted run does."""
    total = 60
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(2, straight, tmp_path, multi30k_dir, f"train.max_steps={total}")
    proc = subprocess.Popen(_command(2, resumed, tmp_path, f"train.max_steps={total}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(multi30k_dir),
                            cwd=tmp_path, start_new_session=True)
    log_file = resumed / "train.log"
    deadline = time.monotonic() + 180
    while not (log_file.exists() and "epoch 1 step 3 " in log_file.read_text(errors="replace")):
        assert proc.poll() is None, f"torchrun exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no step 3 within 180 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
    out, _ = proc.communicate(timeout=120)
    stopped = [line for line in out.splitlines() if "SIGTERM received" in line or "saved" in line]
    assert proc.returncode != 0 and stopped, out[-3000:]
    latest = json.loads((resumed / "checkpoints" / "checkpoints.json").read_text())["latest"]
    step = int(latest.split("-")[1])
    if step >= total:
        pytest.skip(f"the run reached step {step} before the signal arrived")
    state = torch.load(resumed / "checkpoints" / latest / "trainer_state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2
    _train(2, resumed, tmp_path, multi30k_dir, f"train.max_steps={total}")
    assert "resuming from" in log_file.read_text()
    a, b = _final_weights(straight), _final_weights(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)

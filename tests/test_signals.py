"""SIGTERM/SIGINT on a real nmt-train subprocess (RELIABILITY.md R16, R17): the first signal
finishes the update, saves and exits 75; a second exits at once; the same command resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_cli_e2e import _script

pytestmark = pytest.mark.slow  # real-data training subprocesses (about 2 minutes in all); CI runs them


def _start(run_dir: Path, tmp: Path, data: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, NMT_DATA_DIR=str(data))
    overrides = dict(o.split("=", 1) for o in [
        "debug=tiny", "data.max_train_pairs=200", f"hydra.run.dir={run_dir}", f"data.tokenizer.cache_dir={tmp / 'spm'}",
        "train.progress_bar=false", "train.log_every_steps=1", "train.max_epochs=100000",
        "train.attention.sentences=0", "train.eval_test=false", *extra])  # later ones win
    args = [_script("nmt-train"), *(f"{k}={v}" for k, v in overrides.items())]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp)


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"nmt-train exited ({proc.returncode}) before logging {text!r}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"nmt-train did not log {text!r} within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_exits_75_and_the_same_command_resumes(tmp_path, multi30k_dir, sig):
    """R16, R17: save and exit 75 within 25 s; re-running the identical command resumes and
    appends to the text log."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir, tmp_path, multi30k_dir)
    _wait_for(run_dir / "train.log", "epoch 1 step 3 ", proc)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=25)
    assert time.monotonic() - sent < 25
    assert proc.returncode == 75, out[-3000:]
    log = (run_dir / "train.log").read_text()
    assert f"{sig.name} received" in log and "run the same command again to resume" in log
    assert not (run_dir / "results.json").exists()
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    assert saved, "no checkpoint written"

    again = _start(run_dir, tmp_path, multi30k_dir, "train.max_steps=12")  # a budget change is allowed
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    log2 = (run_dir / "train.log").read_text()
    assert log2.startswith(log)  # appended, nothing lost
    assert f"resuming from {run_dir / 'checkpoints' / saved[-1]}" in log2
    assert (run_dir / "results.json").exists()


def test_second_signal_exits_at_once(tmp_path, multi30k_dir):
    """R16: a second signal does not wait for the save. Two signals sent back to back merge into
    one (the kernel keeps one pending SIGTERM), so the second is sent once the first has been
    handled, with the process frozen (SIGSTOP) so that it cannot finish its save in between."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir, tmp_path, multi30k_dir)
    _wait_for(run_dir / "train.log", "epoch 1 step 2 ", proc)
    proc.send_signal(signal.SIGTERM)
    seen, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if not line or "SIGTERM received: finishing the current update" in line:
            break
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=25)
    out = "".join(seen) + out
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]  # not 75: it did not wait to save
    assert "second signal (SIGTERM): exiting now without saving" in out


def _wait_for_a_save(ckpt_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> bool:
    """Poll until a checkpoint is being written (a ``.tmp-`` entry exists); True when seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(name.startswith(".tmp-") for name in os.listdir(ckpt_dir)):
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    return False


def test_sigkill_at_random_moments_always_leaves_a_resumable_run(tmp_path, multi30k_dir):
    """R1, R2, R3: SIGKILL a training subprocess 10 times during frequent saves, most of them
    aimed at a save in progress (the process is frozen with SIGSTOP when a temp entry appears,
    and the kill counts as mid-save only if the entry is still there); at least half land
    mid-save. Every time the newest complete checkpoint loads, and re-running the same command
    resumes from it; finally the run completes."""
    import random
    import re

    from nmt.train import checkpoint as ckpt_io

    run_dir, log_path = tmp_path / "run", tmp_path / "run" / "train.log"
    ckpt_dir = run_dir / "checkpoints"
    extra = ("train.save_every_steps=2", "train.max_steps=100000", "train.keep_last=2")
    rng = random.Random(0)
    resumed_steps, landed = [], []
    for attempt in range(10):
        before = log_path.read_text(errors="replace") if log_path.exists() else ""
        proc = _start(run_dir, tmp_path, multi30k_dir, *extra)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until this attempt is training
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            if " step " in text[len(before):] or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"attempt {attempt}: exited early ({proc.returncode})"
        if attempt % 4 == 3:  # now and then a moment that is not chosen by the saves
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            time.sleep(rng.uniform(0.0, 0.5))
            assert _wait_for_a_save(ckpt_dir, proc), f"attempt {attempt}: no save seen"
        proc.send_signal(signal.SIGSTOP)  # frozen: what is on disk now is what the kill leaves
        temps = [p.name for p in ckpt_dir.iterdir() if p.name.startswith(".tmp-")] if ckpt_dir.exists() else []
        landed.append("mid-save" if temps else "between saves")
        proc.kill()
        proc.communicate(timeout=30)
        newest = [c for c in ckpt_io.complete_checkpoints(ckpt_dir) if c.name.startswith("step-")]
        assert newest, f"attempt {attempt}: no complete checkpoint"
        ckpt_io.load_trainer_state(newest[-1])  # loads safely
        assert not [p for p in ckpt_dir.iterdir()
                    if p.is_dir() and not p.name.startswith(".tmp-") and not (p / ckpt_io.MARKER).exists()]
        text = log_path.read_text(errors="replace")[len(before):]
        found = re.search(r"resuming from \S*step-(\d+)", text)
        if found:
            resumed_steps.append(int(found.group(1)))
    assert landed.count("mid-save") >= len(landed) // 2, landed
    last = int(newest[-1].name.split("-")[1])
    final = _start(run_dir, tmp_path, multi30k_dir, *extra, f"train.max_steps={last + 4}")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out[-3000:]
    log = log_path.read_text()
    assert f"resuming from {newest[-1]}" in log  # exactly the newest complete checkpoint
    assert len(resumed_steps) >= 8 and resumed_steps == sorted(resumed_steps)  # never went back
    assert f'"steps": {last + 4}' in (run_dir / "results.json").read_text()
    assert not list(ckpt_dir.glob(".tmp-*"))  # the trainer (the lock holder) cleaned what the kills left

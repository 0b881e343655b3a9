"""End to end through the console scripts: nmt-train (debug=tiny on 200 real Multi30k pairs),
then nmt-translate and nmt-evaluate on the checkpoint alone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"console script {name} is not installed: run pip install -e .")
    return path


def _run(args, env, stdin=None, cwd=None):
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import real_data_dir

    data = real_data_dir()
    if data is None:
        pytest.skip("real Multi30k not available: set NMT_DATA_DIR to a folder containing multi30k/")
    tmp = tmp_path_factory.mktemp("e2e")
    run_dir = tmp / "run"
    env = dict(os.environ, NMT_DATA_DIR=str(data))
    proc = _run([_script("nmt-train"), "debug=tiny", "data.max_train_pairs=200", f"hydra.run.dir={run_dir}",
                 f"data.tokenizer.cache_dir={tmp / 'spm'}", "train.progress_bar=false"], env, cwd=tmp)
    return run_dir, env, proc


def test_train_writes_checkpoints_results_and_tensorboard(trained_run):
    run_dir, _, proc = trained_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] > 0 and results["test"]["split"] == "test2016"
    assert results["test"]["bleu_signature"].startswith("nrefs:1|case:mixed")
    index = json.loads((run_dir / "checkpoints" / "checkpoints.json").read_text())
    best = run_dir / "checkpoints" / index["best"]
    for name in ("model.safetensors", "trainer_state.pt", "config.yaml", "meta.json", "spm.model", "COMPLETE"):
        assert (best / name).exists(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    hyps = (run_dir / "test2016.hyp.de").read_text().split("\n")
    assert len(hyps) == 40 + 1  # one line per test sentence (max_test_pairs=40) and a final newline
    assert "test test2016: BLEU" in proc.stdout + proc.stderr
    assert "test test2016: BLEU" in "".join(p.read_text() for p in run_dir.glob("*.log"))  # the text log


def test_translate_from_arguments_and_stdin(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    env = {k: v for k, v in env.items() if k != "NMT_DATA_DIR"}  # the checkpoint alone suffices
    out = _run([_script("nmt-translate"), f"ckpt={run_dir}", "beam_size=2", "A man is walking.", "Two dogs."],
               env, cwd=tmp_path).stdout.split("\n")
    assert len(out) == 3 and out[2] == ""
    lines = "A dog runs.\n\nA woman sings a song.\n"
    proc = _run([_script("nmt-translate"), f"ckpt={run_dir}"], env, stdin=lines, cwd=tmp_path)
    got = proc.stdout.split("\n")
    assert len(got) == 4 and got[1] == "" and got[3] == ""  # empty input line -> empty output line
    assert "line 2 is empty" in proc.stderr
    nbest = _run([_script("nmt-translate"), f"ckpt={run_dir}", "nbest=2", "beam_size=2"], env,
                 stdin="A dog runs.\n", cwd=tmp_path).stdout.strip().split("\n")
    assert len(nbest) == 2 and all(line.startswith("0 ||| ") for line in nbest)


def test_translate_errors_are_clear(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    proc = subprocess.run([_script("nmt-translate"), f"ckpt={run_dir}", "beam_sise=2", "x"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0 and "beam_sise" in proc.stderr
    proc = subprocess.run([_script("nmt-translate"), f"ckpt={tmp_path / 'nothing'}", "x"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    proc = subprocess.run([_script("nmt-translate"), f"ckpt={run_dir}"], input="", capture_output=True, text=True,
                          env=env)
    assert proc.returncode != 0 and "no input" in proc.stderr


def test_evaluate_prints_bleu_with_signatures(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    out = tmp_path / "hyp.txt"
    proc = _run([_script("nmt-evaluate"), f"ckpt={run_dir}", "split=test2016", f"output={out}", "beam_size=2"],
                env, cwd=tmp_path)
    assert "BLEU = " in proc.stdout and "case:lc" in proc.stdout and "chrF = " in proc.stdout
    result = json.loads(proc.stdout.strip().split("\n")[-1])
    assert result["sentences"] == 1000  # the whole split: evaluation never uses the debug slice
    assert len(out.read_text().split("\n")) == 1001

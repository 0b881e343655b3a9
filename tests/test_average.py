"""Checkpoint averaging (nmt/train/average.py) and ``nmt-average``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from nmt.train.average import average_and_keep, average_checkpoints, select_checkpoints


def _fake(root: Path, name: str, step: int, bleu=None, complete: bool = True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"step": step, "valid": {} if bleu is None else {"bleu": bleu}}))
    if complete:
        (d / "COMPLETE").write_text("ok\n")
    return d


def test_select_by_bleu_and_by_step(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    for step, bleu in ((100, 20.0), (200, 25.5), (300, 24.0), (400, 25.5), (500, 22.0)):
        _fake(root, f"step-{step:07d}", step, bleu)
    _fake(root, "step-0000600", 600)  # saved without a validation: no dev BLEU
    _fake(root, "step-0000700", 700, 99.0, complete=False)  # interrupted while saving
    _fake(root, "averaged", 500, 30.0)  # not a training checkpoint
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    # the best 3 by dev BLEU, oldest first; the run directory works as well as checkpoints/
    assert names(select_checkpoints(root, 3, "bleu")) == ["step-0000200", "step-0000300", "step-0000400"]
    assert names(select_checkpoints(root.parent, 2)) == ["step-0000200", "step-0000400"]  # tie: both 25.5
    assert names(select_checkpoints(root, 3, "last")) == ["step-0000400", "step-0000500", "step-0000600"]
    assert len(select_checkpoints(root, 10, "last")) == 6  # fewer than asked: all of them
    with pytest.raises(ValueError, match="at least 2"):
        select_checkpoints(root, 1)
    with pytest.raises(ValueError, match="choose one of bleu, last"):
        select_checkpoints(root, 3, "loss")


def test_select_errors_name_the_directory_and_the_checkpoints_without_bleu(tmp_path):
    root = tmp_path / "checkpoints"
    _fake(root, "step-0000100", 100, 20.0)
    _fake(root, "step-0000200", 200)
    with pytest.raises(ValueError, match=r"1 step checkpoints with a dev BLEU.*without one: step-0000200.*by=last"):
        select_checkpoints(root, 2, "bleu")
    assert len(select_checkpoints(root, 2, "last")) == 2
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: 0 complete step-\\* checkpoints"):
        select_checkpoints(tmp_path / "empty", 2, "last")


# ---------------------------------------------------------------------- on a tiny trained run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """3 epochs, a validation and a checkpoint after each, all kept."""
    from test_cli_e2e import train_tiny

    run_dir, env, _ = train_tiny(tmp_path_factory, "average", "data.max_train_pairs=100", "train.max_epochs=3",
                                 "train.keep_last=10", "train.eval_test=false", "train.attention.sentences=0",
                                 "train.attention.stats_sentences=0")
    return run_dir, env


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run_dir / "checkpoints", tmp_path / "run" / "checkpoints")
    return tmp_path / "run"


def _index(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "checkpoints.json").read_text())


def test_average_and_keep_keeps_only_a_better_average(tiny_run, tmp_path):
    from safetensors.torch import load_file

    from nmt.train.checkpoint import load_model

    run = _copy_run(tiny_run[0], tmp_path)
    root = run / "checkpoints"
    paths = select_checkpoints(root, 3, "last")
    before = _index(run)
    loaded = load_model(run)
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    seen = []

    def dev_scores(model):  # a scripted dev BLEU; records the weights it was asked to score
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"bleu": 10.0}

    worse = average_and_keep(loaded.model, paths, dev_scores, 12.0, loaded.config, loaded.tokenizer, root,
                             save="kept")
    assert not worse.kept and worse.saved is None and not (root / "averaged").exists()
    assert _index(run) == before
    assert all(torch.equal(v, weights[k]) for k, v in loaded.model.state_dict().items())  # restored
    mean = average_checkpoints(paths)
    assert all(torch.allclose(seen[0][k], v) for k, v in mean.items())  # it scored the average
    stacked = [load_file(str(p / "model.safetensors")) for p in paths]
    some = next(iter(mean))
    torch.testing.assert_close(mean[some], sum(s[some] for s in stacked) / 3)

    worse = average_and_keep(loaded.model, paths, dev_scores, 12.0, loaded.config, loaded.tokenizer, root)
    assert not worse.kept and worse.saved == root / "averaged" and _index(run) == before  # written, not best

    better = average_and_keep(loaded.model, paths, lambda m: 13.5, 12.0, loaded.config, loaded.tokenizer, root)
    assert better.kept and better.bleu == 13.5
    assert _index(run) == dict(before, best="averaged", best_bleu=13.5)
    reloaded = load_model(run)  # the run's best is now the average, loadable like any checkpoint
    assert reloaded.path.name == "averaged" and reloaded.meta["averaged"] == [p.name for p in paths]
    assert all(torch.allclose(reloaded.model.state_dict()[k], v) for k, v in mean.items())
    # a worse average never overwrites the average that is the run's best
    again = average_and_keep(loaded.model, paths[:2], lambda m: 1.0, 13.5, loaded.config, loaded.tokenizer, root)
    assert not again.kept and again.saved is None and "not overwritten" in again.notes[0]
    assert json.loads((root / "averaged" / "meta.json").read_text())["averaged"] == [p.name for p in paths]


def test_cli_writes_a_loadable_average_and_keep_better_leaves_best(tiny_run, tmp_path):
    from test_cli_e2e import _run, _script

    from nmt.train.checkpoint import load_model

    run = _copy_run(tiny_run[0], tmp_path)
    env = tiny_run[1]
    before = _index(run)
    proc = _run([_script("nmt-average"), f"run={run}", "n=3", "by=last", "num_threads=1"], env, cwd=tmp_path)
    result = json.loads(proc.stdout.strip().split("\n")[-1])
    assert result["averaged"] == sorted(p.name for p in (run / "checkpoints").glob("step-*"))[-3:]
    assert result["best"]["checkpoint"] == before["best"] and result["dev"]["split"] == "valid"
    assert result["kept"] == (result["average"]["bleu"] > result["best"]["bleu"])
    assert _index(run)["best"] == ("averaged" if result["kept"] else before["best"])
    assert f"written to {run / 'checkpoints' / 'averaged'}" in proc.stdout
    avg = load_model(run / "checkpoints" / "averaged")
    assert avg.meta["valid"]["bleu"] == result["average"]["bleu"] and avg.meta["averaged_by"] == "last"
    out = _run([_script("nmt-translate"), f"ckpt={run / 'checkpoints' / 'averaged'}", "A dog runs."], env,
               cwd=tmp_path)
    assert out.stdout.count("\n") == 1
    # keep=always: the average becomes best; out= outside the run is written but cannot become best
    _run([_script("nmt-average"), f"run={run}", "n=2", "keep=always", "num_threads=1"], env, cwd=tmp_path)
    assert _index(run)["best"] == "averaged"
    proc = _run([_script("nmt-average"), f"run={run}", "n=2", "keep=always", f"out={tmp_path / 'elsewhere'}",
                 "num_threads=1"], env, cwd=tmp_path)
    assert "checkpoints.json is left unchanged" in proc.stdout and load_model(tmp_path / "elsewhere")
    bad = subprocess.run([_script("nmt-average"), f"run={run}", "keep=sometimes"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode != 0 and "error: keep='sometimes'" in bad.stderr


def test_trainer_keeps_the_best_n_by_dev_bleu_and_tries_their_average(tmp_path, caplog):
    """train.average_best=3 with keep_last=1: pruning spares the 3 best checkpoints by dev BLEU,
    and the end of training averages exactly those (kept only if better on dev)."""
    import logging

    from nmt.train.checkpoint import complete_checkpoints, read_index
    from test_resume import _trainer

    trainer = _trainer(tmp_path, max_epochs=6, keep_last=1, average_best=3)
    with caplog.at_level(logging.INFO):
        results = trainer.train()
    history = [(h["bleu"], h["step"]) for h in results["history"]]
    top = sorted(history, reverse=True)[:3]  # ties go to the later step, as select_checkpoints does
    kept = {c.name for c in complete_checkpoints(tmp_path / "checkpoints") if c.name.startswith("step-")}
    assert {f"step-{s:07d}" for _, s in top} <= kept
    assert len(kept) <= 3 + 2  # the 3 best, plus latest and best (pruned otherwise)
    report = [r.getMessage() for r in caplog.records if r.getMessage().startswith("average of 3 checkpoints")]
    assert len(report) == 1 and all(f"step-{s:07d}" in report[0] for _, s in top)
    index = read_index(tmp_path / "checkpoints")
    if "kept as best" in report[0]:
        assert index["best"] == "averaged" == results["checkpoint"]
    else:
        assert index["best"].startswith("step-") and not (tmp_path / "checkpoints" / "averaged").exists()


def test_out_never_replaces_the_run_or_a_folder_that_is_not_a_checkpoint(tiny_run, tmp_path):
    """Issue 36 A2, R31: out=RUN/checkpoints, out=RUN or out=a folder of other files deleted
    them; now each is refused and nothing is touched. A checkpoint nmt-average did not write is
    replaced only with force=true; a run that a trainer holds is refused (R32)."""
    import shutil

    from nmt.cli.average import average

    run = _copy_run(tiny_run[0], tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    (models / "en-fr.txt").write_text("someone else's model")

    def files():
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

    before = files()
    for out in (run / "checkpoints", run, models, tmp_path):
        with pytest.raises(SystemExit, match="^error: out="):
            average([f"run={run}", "n=2", f"out={out}", "num_threads=1"])
    assert files() == before
    step = sorted((run / "checkpoints").glob("step-*"))[0]
    shutil.copytree(step, models / "de-en")  # a training checkpoint kept elsewhere
    with pytest.raises(SystemExit, match="force=true"):
        average([f"run={run}", "n=2", f"out={models / 'de-en'}", "num_threads=1"])
    from nmt.train.checkpoint import RunLock

    with RunLock(run):
        with pytest.raises(SystemExit, match="in use by another nmt process"):
            average([f"run={run}", "n=2", "num_threads=1"])
    average([f"run={run}", "n=2", f"out={models / 'de-en'}", "force=true", "num_threads=1"])
    assert json.loads((models / "de-en" / "meta.json").read_text())["averaged"]
    assert (models / "en-fr.txt").read_text() == "someone else's model"

"""One writer per run, and nothing deleted that nmt did not make (RELIABILITY.md R3, R17, R31, R32):
the run lock, what ``train.overwrite`` may delete, readers that delete nothing, damaged indexes
and checkpoints, early stopping that survives a kill, averaging only the end of training, and
files readable by the team. In process, on the synthetic reverse task of test_resume."""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import torch

from nmt.train import checkpoint as ckpt_io
from nmt.train.trainer import RunDirError, TrainingInterrupted
from test_resume import _record, _trainer


def _fitted_trainer(run_dir, **train):
    """:func:`test_resume._trainer` with a cosine decay fitted to a (generous) time budget when
    warmup ends (update 4): a first validation times the fit."""
    from nmt.config import AttentionPlotConfig, Config, OptimConfig, SearchConfig, TrainConfig
    from nmt.train.trainer import Trainer
    from test_resume import MODELS, _data

    train = {"max_tokens": 60, "max_epochs": 100, "log_every_steps": 1, "eval_test": False, "progress_bar": False,
             "max_steps": 24, "validate_after_updates": 15, "fit_schedule_to_time": True, "max_time_minutes": 30,
             "attention": AttentionPlotConfig(sentences=0, stats_sentences=0), **train}
    cfg = Config(model=MODELS["transformer"], optim=OptimConfig(lr=3e-3, warmup_steps=4, scheduler="cosine"),
                 train=TrainConfig(**train), search=SearchConfig(beam_size=2, max_len_b=3))
    return Trainer(cfg, _data(), run_dir)


def _interrupted_run(run_dir, stop_at=3, **train):
    """A run stopped (as by SIGTERM) after update ``stop_at``: checkpoints, no results.json."""
    trainer = _trainer(run_dir, **train)
    _record(trainer, stop_at=stop_at)
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    return trainer


def test_a_second_trainer_of_the_same_run_is_refused_naming_the_holder(tmp_path):
    """R32: one trainer per run directory: a second one is refused with the holder's pid, and the
    directory is free again once the first has finished."""
    first = _trainer(tmp_path, max_steps=2)
    with pytest.raises(RunDirError, match=rf"in use by another nmt process \(pid {os.getpid()} trains\)"):
        _trainer(tmp_path, max_steps=2)
    first.train()
    assert (tmp_path / "results.json").exists()
    _trainer(tmp_path, max_steps=2, overwrite=True).close()  # free again


def test_overwrite_resumes_an_unfinished_run_and_spares_files_nmt_did_not_write(tmp_path):
    """R32: train.overwrite=true never destroys an interrupted run (a requeued job re-runs the
    same command): it resumes. On a finished run it deletes nmt's outputs and nothing else (R31)."""
    _interrupted_run(tmp_path, stop_at=3)
    again = _trainer(tmp_path, overwrite=True, max_steps=6)
    assert again.resumed_from is not None and again.progress.step == 3
    again.train()
    (tmp_path / "checkpoints" / "notes.txt").write_text("mine")
    (tmp_path / "tensorboard" / "my_plot.png").write_bytes(b"png")
    fresh = _trainer(tmp_path, overwrite=True, max_steps=2)
    assert fresh.resumed_from is None and fresh.progress.step == 0
    assert (tmp_path / "checkpoints" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "tensorboard" / "my_plot.png").exists()
    assert not ckpt_io.complete_checkpoints(tmp_path / "checkpoints") and not (tmp_path / "results.json").exists()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) <= 1  # only the new run's
    fresh.close()


def test_readers_delete_nothing(tmp_path):
    """R3, R31: a reader (translate, evaluate, average, export, align) deletes nothing, not even a
    temp directory: it may be a save in progress, or a user's file where a checkpoint was expected."""
    from nmt.cli.translate import main as translate

    _interrupted_run(tmp_path / "run", stop_at=2)
    saving = tmp_path / "run" / "checkpoints" / ".tmp-step-0000009"  # a save in progress
    saving.mkdir()
    home = tmp_path / "home"
    (home / ".tmp-draft").mkdir(parents=True)
    (home / ".tmp-draft" / "thesis.tex").write_text("mine")
    for ckpt in (tmp_path / "run", home):
        with pytest.raises(SystemExit):  # the synthetic run has no sentencepiece model: refused, after listing
            translate([f"ckpt={ckpt}", "x"])
    assert saving.is_dir() and (home / ".tmp-draft" / "thesis.tex").read_text() == "mine"


def test_a_damaged_index_or_newest_checkpoint_is_survived(tmp_path, caplog):
    """R17: a malformed checkpoints.json is ignored with a warning (the checkpoints on disk
    decide) and rewritten by the next save; an index entry outside the folder is never followed;
    a newest checkpoint that cannot be loaded falls back to the one before it."""
    _interrupted_run(tmp_path, stop_at=4, save_every_steps=2)
    root = tmp_path / "checkpoints"
    (root / "checkpoints.json").write_text("{not json")
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "COMPLETE").write_text("ok\n")
    (outside / "meta.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        resumed = _trainer(tmp_path, max_steps=6, save_every_steps=2)
        resumed.train()
    assert "checkpoints.json" in caplog.text and json.loads((root / "checkpoints.json").read_text())["latest"]
    (root / "checkpoints.json").write_text(json.dumps({"best": "../victim", "latest": "../victim"}))
    assert ckpt_io.resolve_checkpoint(tmp_path).parent == root

    _interrupted_run(tmp_path / "b", stop_at=4, save_every_steps=2)
    newest = ckpt_io.complete_checkpoints(tmp_path / "b" / "checkpoints")[-1]
    state = newest / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # damaged outside nmt
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = _trainer(tmp_path / "b", max_steps=6, save_every_steps=2)
    assert again.progress.step == 2 and "trying the checkpoint before it" in caplog.text
    again.close()


def test_an_early_stopped_run_killed_in_its_final_evaluation_does_not_train_on(tmp_path, monkeypatch):
    """Issue 36 B11: early stopping on patience stops after exactly ``patience`` validations
    without improvement; the decision is saved, so a run killed during its final evaluation goes
    straight to the final evaluation when re-run instead of training further."""
    import nmt.train.validator as validation

    scores = iter([20.0, 19.0, 18.0, 17.0, 16.0, 15.0, 14.0, 13.0])  # dev BLEU only gets worse
    real = validation.score_corpus
    monkeypatch.setattr(validation, "score_corpus", lambda h, r: dict(real(h, r), bleu=next(scores)))
    def killed(reason, **parts):
        raise KeyboardInterrupt("killed during the test decode")

    first = _trainer(tmp_path, max_epochs=50, patience=2)
    import nmt.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "final_evaluation", killed)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert len(first.progress.history) == 3  # the best, then 2 worse: patience=2
    stopped_at = first.progress.step
    monkeypatch.undo()
    second = _trainer(tmp_path, max_epochs=50, patience=2)
    results = second.train()
    assert results["steps"] == stopped_at and "early stopping" in results["stop_reason"]


def test_average_last_takes_only_checkpoints_from_the_end_of_training(tmp_path, caplog):
    """Issue 36 B13: with validate_after_updates and a schedule fitted to the time budget, the
    warm-up validation's checkpoint is among the last N saved, but train.average_last never
    averages across that gap: only checkpoints from validate_after_updates on."""
    trainer = _fitted_trainer(tmp_path, valid_every_steps=3, average_last=5, keep_last=5)
    with caplog.at_level(logging.INFO):
        trainer.train()
    saved = [c.name for c in ckpt_io.complete_checkpoints(tmp_path / "checkpoints") if c.name.startswith("step-")]
    assert "step-0000004" in saved[-5:]  # the warm-up validation that timed the fit
    report = [r.getMessage() for r in caplog.records if r.getMessage().startswith("average of")]
    assert report and "step-0000004" not in report[0] and "step-0000024" in report[0]


def test_the_fitted_schedule_is_in_the_checkpoint_of_the_validation_that_timed_it(tmp_path, caplog):
    """Issue 36 C19: the schedule fitted at the end of warmup is saved with that validation's
    checkpoint; a run killed before its next save resumed and fitted again (the line
    "schedule fitted ..." appeared twice in train.log, and the resumed schedule differed)."""
    trainer = _fitted_trainer(tmp_path, valid_every_steps=100)
    _record(trainer, stop_at=6)
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    fitted = ckpt_io.load_trainer_state(tmp_path / "checkpoints" / "step-0000004")["budget"]["schedule_steps"]
    assert fitted == trainer.budget.schedule_steps > 0
    (tmp_path / "checkpoints" / "step-0000006").rename(tmp_path / "gone")  # killed before that save
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = _fitted_trainer(tmp_path, valid_every_steps=100)
        again.train()
    assert again.budget.schedule_steps == fitted
    assert not [r for r in caplog.records if r.getMessage().startswith("schedule fitted")]


def test_written_files_keep_the_umask_mode(tmp_path):
    """Issue 36 C15: atomic writes (results, indexes, hypotheses, nmt-translate output=) get the
    mode a plain open() would, so a teammate can read a shared run (mkstemp alone gives 0600)."""
    from nmt.cli.translate_io import OutputWriter
    from nmt.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "results.json", "{}\n")
        writer = OutputWriter(str(tmp_path / "out.txt"))
        writer.write("a line\n")
        writer.close()
    finally:
        os.umask(old)
    for name in ("results.json", "out.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_failed_translation_keeps_the_finished_chunks(tmp_path):
    """Issue 36 B5, R25: when translating fails part way with output=FILE, the chunks already
    translated are kept (FILE.partial) and FILE itself is never half-written."""
    from nmt.cli.translate_io import OutputWriter

    writer = OutputWriter(str(tmp_path / "out.txt"))
    writer.write("first\nsecond\n")
    writer.close(ok=False)
    assert not (tmp_path / "out.txt").exists()
    assert (tmp_path / "out.txt.partial").read_text() == "first\nsecond\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt.partial"]


@pytest.mark.parametrize("what", ["safetensors", "torch.save"])
def test_a_full_disk_in_the_real_writers_is_the_r18_message(tmp_path, monkeypatch, what):
    """R18: a full disk reaches us through safetensors (SafetensorError) or torch.save
    (RuntimeError), not only OSError: the save is reported with the previous checkpoint, which
    stays intact, and training stops with RunDirError instead of a traceback."""
    import safetensors.torch
    from safetensors import SafetensorError

    trainer = _trainer(tmp_path, max_steps=6, save_every_steps=2)
    real_save_model, real_torch_save = safetensors.torch.save_model, torch.save
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint fits, the second does not
            raise (SafetensorError("No space left on device (os error 28)") if what == "safetensors"
                   else RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed "
                                     "writing file data/0: file write failed"))
        return (real_save_model if what == "safetensors" else real_torch_save)(*args, **kwargs)

    if what == "safetensors":
        monkeypatch.setattr(safetensors.torch, "save_model", full)
    else:
        monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunDirError, match=r"cannot save checkpoint step-0000004 .*the previous checkpoint "
                                          r"\(step-0000002\) is intact"):
        trainer.train()
    assert [c.name for c in ckpt_io.complete_checkpoints(tmp_path / "checkpoints")] == ["step-0000002"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_dev_sentences_longer_than_the_positions_are_truncated_for_validation(tmp_path, caplog):
    """Issue 36 B5: a dev sentence longer than model.max_positions - 1 crashed validation (and so
    every restart); it is truncated with a warning for the dev loss and for decoding."""
    from nmt.config import AttentionPlotConfig, Config, ModelConfig, OptimConfig, SearchConfig, TrainConfig
    from nmt.data.text import ParallelText
    from nmt.train.trainer import Trainer
    from test_resume import _data

    data = _data()
    long = " ".join(str(i % 20) for i in range(40))
    data.valid = ParallelText(data.valid.src + [long], data.valid.tgt + [long], [1, 2, 3, 4])
    cfg = Config(model=ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
                                   max_positions=16),
                 optim=OptimConfig(lr=3e-3, warmup_steps=5), search=SearchConfig(beam_size=2, max_len_b=30),
                 train=TrainConfig(max_tokens=60, max_steps=3, log_every_steps=1, eval_test=False,
                                   progress_bar=False, attention=AttentionPlotConfig(sentences=0, stats_sentences=0)))
    with caplog.at_level(logging.WARNING):
        results = Trainer(cfg, data, tmp_path).train()
    assert len(results["history"]) == 1 and "truncated" in caplog.text

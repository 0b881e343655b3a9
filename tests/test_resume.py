"""Exact resume, the resume guard, finished runs, TensorBoard purge and non-finite updates
(RELIABILITY.md R6-R9, R13, R17), in process on a small synthetic reverse task."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import signal

import pytest
import torch

from nmt.config import AttentionConfig, AttentionPlotConfig, Config, ModelConfig, OptimConfig, RNNDecoderConfig, SearchConfig, TrainConfig
from nmt.data.text import ParallelText
from nmt.data.dataset import TokenizedDataset
from nmt.train import checkpoint as ckpt_io
from nmt.train.data import PreparedData
from nmt.train.trainer import RunDirError, Trainer, TrainingDiverged, TrainingInterrupted
from test_train_parts import IntTok

VOCAB = 30


def _data() -> PreparedData:
    rng = random.Random(0)
    src = [[rng.randrange(4, VOCAB) for _ in range(rng.randrange(2, 9))] for _ in range(48)]
    tgt = [s[::-1] for s in src]
    valid_src = [" ".join(str(i - 4) for i in s) for s in src[:3]]
    valid = ParallelText(valid_src, [" ".join(reversed(s.split())) for s in valid_src], [1, 2, 3])
    return PreparedData(IntTok(), TokenizedDataset(src, tgt), valid, None)


MODELS = {
    "transformer": ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1, dropout=0.1),
    "rnn": ModelConfig(arch="rnn", embed_dim=16, hidden_size=16, encoder_layers=1, decoder_layers=1, dropout=0.1,
                       decoder=RNNDecoderConfig(style="luong", input_feeding=True),
                       attention=AttentionConfig(score="general", window="local_p", window_size=2)),
}


def _trainer(run_dir, arch="transformer", model=None, **train) -> Trainer:
    train = {"max_tokens": 60, "max_epochs": 4, "log_every_steps": 1, "keep_last": 3, "eval_test": False,
             "progress_bar": False, **train}
    train["attention"] = AttentionPlotConfig(sentences=0, stats_sentences=0)  # figures are tested elsewhere
    cfg = Config(model=model or MODELS[arch], optim=OptimConfig(lr=3e-3, warmup_steps=5),
                 train=TrainConfig(**train), search=SearchConfig(beam_size=2, max_len_b=3))
    return Trainer(cfg, _data(), run_dir)


def _record(trainer: Trainer, stop_at: int | None = None) -> list[float]:
    """Record every update's loss; ask the trainer to stop after update ``stop_at``."""
    losses = []
    update = trainer.step

    def wrapped(group):
        stats = update(group)
        losses.append(stats.loss)
        if stop_at is not None and trainer.progress.step == stop_at:
            trainer.request_stop("test")
        return stats

    trainer.step = wrapped
    return losses


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
@pytest.mark.parametrize("where", ["mid_epoch", "epoch_end"])
def test_resume_is_bitwise_identical_to_the_uninterrupted_run(tmp_path, arch, where):
    """R6, R7, R8: K steps straight == K/2, stop, resume to K (losses and parameters bitwise,
    dropout on), mid-epoch and at an epoch boundary, Transformer and BiRNN (local-p)."""
    torch.manual_seed(123)  # the trainer reseeds; this proves the seed, not the caller, decides
    straight = _trainer(tmp_path / "straight", arch)
    per_epoch = len(straight.sampler)
    assert per_epoch >= 4
    total = 2 * per_epoch + 3
    straight.cfg.train.max_steps = total
    expected = _record(straight)
    straight.train()
    stop = per_epoch + 2 if where == "mid_epoch" else per_epoch

    first = _trainer(tmp_path / "resumed", arch, max_steps=total)
    got = _record(first, stop_at=stop)
    with pytest.raises(TrainingInterrupted) as info:
        first.train()
    assert info.value.step == stop and len(got) == stop
    torch.manual_seed(999)  # whatever the caller's RNG, the checkpoint's states win
    second = _trainer(tmp_path / "resumed", arch, max_steps=total)
    assert second.resumed_from is not None and second.progress.step == stop
    rest = _record(second)
    second.train()
    got += rest

    assert got == expected  # bitwise: floats compared exactly
    want, have = _params(straight), _params(second)
    assert want.keys() == have.keys()
    for k in want:
        assert torch.equal(want[k], have[k]), k
    assert [h["bleu"] for h in second.progress.history] == [h["bleu"] for h in straight.progress.history]


class _NonReentrantHandler(logging.Handler):
    """A log handler that, like ``io.BufferedWriter``, refuses a write nested inside its own
    write ("reentrant call"); it sends SIGTERM to this process while writing the line that
    contains ``signal_on``, so the signal handler runs in the middle of that write."""

    def __init__(self, signal_on: str) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.signal_on, self.busy = signal_on, False

    def emit(self, record: logging.LogRecord) -> None:
        try:  # as logging.StreamHandler.emit: a failed write is handed to handleError, the line lost
            self._write(record)
        except Exception:
            self.handleError(record)

    def _write(self, record: logging.LogRecord) -> None:
        if self.busy:
            raise RuntimeError("reentrant call inside the log stream")
        self.busy = True
        try:
            line = record.getMessage()
            if self.signal_on and self.signal_on in line:
                self.signal_on = ""
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100):  # Python runs the handler at one of the next bytecodes
                    pass
            self.lines.append(line)
        finally:
            self.busy = False


def test_a_signal_during_a_log_write_is_still_logged(tmp_path, monkeypatch):
    """R16: the handler must not log (a nested write into a busy log stream is dropped, which
    made the SIGINT line vanish from train.log once in CI); the stop is logged by the loop."""
    monkeypatch.setattr(logging, "raiseExceptions", False)  # a dropped line stays silent, as in a run
    trainer = _trainer(tmp_path / "run", max_steps=20)
    handler = _NonReentrantHandler(signal_on="step 3 ")
    logger = logging.getLogger("nmt.train")
    level, before = logger.level, signal.getsignal(signal.SIGTERM)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.raises(TrainingInterrupted) as stopped:
            trainer.train()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert stopped.value.step == 3  # the update being logged was the last
    assert any(line.startswith("SIGTERM received") for line in handler.lines), handler.lines
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer's handler is gone again


def test_data_position_resumes_at_the_next_batch(tmp_path):
    """R8: after loading the data state, the next batches equal the uninterrupted iterator's,
    across an epoch boundary."""
    a = _trainer(tmp_path / "a")
    it = iter(a.sampler)
    consumed = [next(it) for _ in range(len(a.sampler) - 1)]
    state = a.sampler.state_dict()
    rest = list(it) + [b for _, b in zip(range(3), iter(a.sampler))]  # end of epoch 1, start of epoch 2
    b = _trainer(tmp_path / "b")
    b.sampler.load_state_dict(state)
    again = list(iter(b.sampler)) + [x for _, x in zip(range(3), iter(b.sampler))]
    assert consumed and again == rest


def test_changed_config_is_refused_with_the_differing_keys(tmp_path):
    """R9: a resume with a config that changes training is refused and names the keys; budget
    changes are allowed."""
    first = _trainer(tmp_path, max_steps=20)
    _record(first, stop_at=3)
    with pytest.raises(TrainingInterrupted):
        first.train()
    changed = ModelConfig(**{**MODELS["transformer"].__dict__, "dropout": 0.3})
    with pytest.raises(RunDirError) as info:
        _trainer(tmp_path, model=changed, max_steps=20, label_smoothing=0.2)
    msg = str(info.value)
    assert "model.dropout: 0.1 -> 0.3" in msg and "train.label_smoothing: 0.1 -> 0.2" in msg
    assert "train.max_steps" not in msg
    with pytest.raises(RunDirError, match="train.resume=false"):
        _trainer(tmp_path, max_steps=20, resume=False)
    resumed = _trainer(tmp_path, max_steps=30, log_every_steps=7)  # allowed differences
    assert resumed.progress.step == 3


def test_finished_run_needs_overwrite(tmp_path):
    """R9: starting over a finished run needs train.overwrite=true, which clears its outputs."""
    _trainer(tmp_path, max_steps=4).train()
    assert (tmp_path / "results.json").exists()
    with pytest.raises(RunDirError, match="finished run"):
        _trainer(tmp_path, max_steps=4)
    fresh = _trainer(tmp_path, max_steps=4, overwrite=True)
    assert fresh.resumed_from is None and fresh.progress.step == 0
    assert not (tmp_path / "results.json").exists() and not ckpt_io.complete_checkpoints(tmp_path / "checkpoints")


def test_unwritable_run_dir_is_reported_at_start(tmp_path):
    """R18: the output directory is checked writable at start."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunDirError, match="not writable"):
        _trainer(blocker / "run")


def test_crash_resumes_from_last_save_and_purges_later_tensorboard_events(tmp_path):
    """R2, R17: after a crash the run resumes from the newest complete checkpoint
    (save_every_steps) and TensorBoard shows each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = _trainer(tmp_path, max_steps=12, save_every_steps=4)
    update = first.step

    def crash_after_10(group):
        if first.progress.step == 10:
            first.monitor.flush()  # what a killed process had written before dying
            raise RuntimeError("simulated crash")
        return update(group)

    first.step = crash_after_10
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.train()
    first.monitor.close()
    second = _trainer(tmp_path, max_steps=12, save_every_steps=4)
    assert second.progress.step == 8 and second.resumed_from.name == "step-0000008"  # saves: 4, 6 (epoch), 8
    second.train()
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, 13))


def test_non_finite_updates_are_skipped_counted_and_stop_training(tmp_path, monkeypatch, caplog):
    """R13: a non-finite loss skips the update (parameters and step count untouched) and is
    counted; N in a row stop training, and the checkpoints stay finite."""
    import nmt.models.seq2seq as seq2seq_module
    from safetensors.torch import load_file

    real = seq2seq_module.linear_label_smoothed_nll  # the fp32 training loss (inside the model's loss)
    poisoned: set[int] = {3}
    calls: list[int] = []

    def maybe_nan(features, weight, bias, target, eps):
        loss, nll = real(features, weight, bias, target, eps)
        if features.requires_grad:  # training updates only, not validation
            calls.append(1)
            if len(calls) in poisoned:
                return loss * float("nan"), nll
        return loss, nll

    monkeypatch.setattr(seq2seq_module, "linear_label_smoothed_nll", maybe_nan)
    trainer = _trainer(tmp_path / "a", max_steps=6, max_epochs=10, preflight=False)  # count updates only
    update, skipped = trainer.step, []

    def watch(group):
        before, step = _params(trainer), trainer.progress.step
        stats = update(group)
        if stats.skipped:
            after = _params(trainer)
            skipped.append(all(torch.equal(before[k], after[k]) for k in before) and trainer.progress.step == step)
        return stats

    trainer.step = watch
    with caplog.at_level("WARNING", logger="nmt.train"):
        results = trainer.train()
    assert skipped == [True] and trainer.progress.skipped_steps == 1 and results["steps"] == 6
    assert "skipped: loss nan" in caplog.text and "first example indices" in caplog.text

    calls.clear()
    poisoned.update(range(5, 100))
    diverging = _trainer(tmp_path / "b", max_steps=50, max_epochs=20, max_bad_steps=3, save_every_steps=2,
                         preflight=False)
    with pytest.raises(TrainingDiverged, match="3 updates in a row"):
        diverging.train()
    assert diverging.progress.step == 3 and diverging.progress.skipped_steps == 4  # update 3 poisoned, then 5-7
    latest = ckpt_io.resolve_checkpoint(tmp_path / "b" / "checkpoints", "latest")
    assert latest.name == "step-0000003"  # saved at the end of epoch 1 (6 batches, 3 of them skipped)
    assert all(torch.isfinite(t).all() for t in load_file(str(latest / "model.safetensors")).values())


def _fail_training_call(trainer: Trainer, at: int, err: Exception) -> None:
    """Make the ``at``-th training-mode forward call raise ``err``."""
    forward, calls = trainer.model.forward, []

    def flaky(*args, **kwargs):
        if trainer.model.training:
            calls.append(1)
            if len(calls) == at:
                raise err
        return forward(*args, **kwargs)

    trainer.model.forward = flaky


def test_out_of_memory_batch_is_skipped_and_logged(tmp_path, caplog):
    """R15: an out-of-memory batch is skipped with its shape logged; training goes on."""
    trainer = _trainer(tmp_path, max_steps=5)
    _fail_training_call(trainer, 3, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with caplog.at_level("WARNING", logger="nmt.train"):
        results = trainer.train()  # call 1 is the preflight, 2 is update 1, 3 fails
    assert results["steps"] == 5 and trainer.progress.oom_skips == 1 and trainer.progress.skipped_steps == 0
    assert "out of memory on a batch of (" in caplog.text and "train.max_tokens" in caplog.text


def test_preflight_reports_a_token_budget_that_does_not_fit(tmp_path):
    """R15: the largest batch runs before step 1; if it does not fit, the error says what to lower."""
    from nmt.train.trainer import BatchTooLarge

    trainer = _trainer(tmp_path, max_steps=5)
    _fail_training_call(trainer, 1, RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    with pytest.raises(BatchTooLarge, match=r"lower train.max_tokens \(now 60\)"):
        trainer.train()
    assert trainer.progress.step == 0


def test_preflight_changes_nothing(tmp_path):
    """R15, R27: with or without the preflight, the same losses and parameters (RNG restored)."""
    runs = []
    for name, preflight in (("on", True), ("off", False)):
        trainer = _trainer(tmp_path / name, max_steps=6, preflight=preflight)
        losses = _record(trainer)
        trainer.train()
        runs.append((losses, _params(trainer)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_fp16_overflow_skips_are_counted_apart_and_the_scaler_resumes(tmp_path):
    """R14, R6: fp16 loss-scale overflows skip the update and count as overflow skips, not as
    non-finite (R13) ones; the loss scaler's state is saved and restored."""
    first = _trainer(tmp_path, max_steps=8, precision="fp16", fp16_init_scale=2.0 ** 22, preflight=False, max_epochs=20)
    losses = _record(first, stop_at=4)
    with pytest.raises(TrainingInterrupted):
        first.train()
    assert first.progress.overflow_skips >= 1 and first.progress.skipped_steps == 0
    assert first.progress.step == 4 and all(math.isfinite(x) for x in losses)
    scale = first.updater.scaler.get_scale()
    assert scale < 2.0 ** 22
    second = _trainer(tmp_path, max_steps=8, precision="fp16", fp16_init_scale=2.0 ** 22, preflight=False, max_epochs=20)
    assert second.updater.scaler.get_scale() == scale
    assert second.train()["steps"] == 8


def test_bf16_autocast_trains(tmp_path):
    """train.precision=bf16 runs the forward pass under autocast and learns."""
    trainer = _trainer(tmp_path, max_steps=12, precision="bf16")
    losses = _record(trainer)
    trainer.train()
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    from omegaconf import OmegaConf

    with pytest.raises(ValueError, match="precision"):  # an Enum: refused when the config is composed
        OmegaConf.merge(OmegaConf.structured(TrainConfig), {"precision": "fp8"})


def test_same_seed_gives_identical_checkpoints_and_another_seed_does_not(tmp_path):
    """R27: one seed drives initialisation, dropout and shuffling: same seed, byte-identical
    weights on CPU; another seed, different ones."""
    weights = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        _trainer(tmp_path / name, max_steps=8, seed=seed).train()
        ckpt = ckpt_io.resolve_checkpoint(tmp_path / name / "checkpoints", "latest")
        weights[name] = (ckpt / "model.safetensors").read_bytes()
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def test_a_full_disk_at_save_time_is_reported_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """R18: a save that fails (disk full) stops training with a message naming the directory
    and the intact previous checkpoint; re-running resumes from that one."""
    import nmt.train.checkpoint as module

    trainer = _trainer(tmp_path, max_steps=12, save_every_steps=4)
    real = module._write_file

    def full_after_step_4(path, data):
        if trainer.progress.step > 4:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(module, "_write_file", full_after_step_4)
    with pytest.raises(RunDirError, match=r"No space left on device; the previous checkpoint \(step-0000004\) "
                                          r"is intact"):
        trainer.train()
    monkeypatch.setattr(module, "_write_file", real)
    again = _trainer(tmp_path, max_steps=12, save_every_steps=4)
    assert again.progress.step == 4
    meta = json.loads((again.resumed_from / "meta.json").read_text())
    assert len(meta["config_sha256"]) == 64

"""train.fit_schedule_to_time: the decay is fitted to the time budget when warmup ends
(nmt.train.budget), ends at min_lr, stops training there, and survives a resume bitwise."""
from __future__ import annotations

import math

import pytest
import torch

from nmt.config import Config, OptimConfig, TrainConfig, validate
from nmt.train import budget
from nmt.train import trainer as trainer_module
from nmt.train.trainer import Trainer, TrainingInterrupted
from test_resume import MODELS, _data, _params, _record

WARMUP, MAX_STEPS, MIN_LR = 4, 200, 1e-5


def test_fitted_length_counts_updates_and_validations():
    # 1 s per update, no validations: 100 updates in 100 s, 900 s left -> 1,000 updates
    assert budget.fit_schedule_steps(100, 100.0, 1000.0, 0, reserve=0.0) == 1000
    assert budget.fit_schedule_steps(100, 100.0, 1000.0, 600, reserve=0.0) == 600  # max_steps bounds it
    # validations: the first (50 s, an untrained model) is not representative; later ones cost
    # 10 s every 50 updates -> 1.2 s per update; u = (170 - 70) / 100 = 1 s; 830 s left -> 691
    assert budget.fit_schedule_steps(100, 170.0, 1000.0, 0, [50.0, 10.0, 10.0], 50, reserve=0.0) == 791
    # with one validation it is the only estimate of the cost
    assert budget.fit_schedule_steps(100, 120.0, 1000.0, 0, [20.0], 50, reserve=0.0) == 100 + int(880 / 1.4)
    # the reserve keeps 2% of the budget for the closing validation
    assert budget.fit_schedule_steps(100, 100.0, 1000.0, 0) == 100 + int(880 / 1.0)
    # out of time already: the schedule ends at the next update
    assert budget.fit_schedule_steps(100, 1200.0, 1000.0, 0) == 101


def test_fitted_length_rejects_nonsense():
    with pytest.raises(ValueError, match="at least one update"):
        budget.fit_schedule_steps(0, 1.0, 60.0, 10)
    with pytest.raises(ValueError, match="budget must be positive"):
        budget.fit_schedule_steps(5, 1.0, 0.0, 10)


def test_config_needs_a_time_budget_and_a_decay():
    cfg = Config(train=TrainConfig(fit_schedule_to_time=True, max_steps=100),
                 optim=OptimConfig(scheduler="cosine", warmup_steps=10))
    with pytest.raises(ValueError, match="fit_schedule_to_time"):
        validate(cfg)
    cfg.train.max_time_minutes = 60
    validate(cfg)
    cfg.optim.scheduler = "inverse_sqrt"
    with pytest.raises(ValueError, match="fit_schedule_to_time"):
        validate(cfg)


def _trainer(run_dir, fit: bool) -> Trainer:
    cfg = Config(model=MODELS["transformer"],
                 optim=OptimConfig(lr=3e-3, warmup_steps=WARMUP, scheduler="cosine", min_lr=MIN_LR),
                 train=TrainConfig(max_tokens=60, max_epochs=100, max_steps=MAX_STEPS, max_time_minutes=1.0,
                                   fit_schedule_to_time=fit, log_every_steps=1, keep_last=3, eval_test=False,
                                   progress_bar=False, patience=0))
    cfg.train.attention.sentences = cfg.train.attention.stats_sentences = 0
    return Trainer(cfg, _data(), run_dir)


@pytest.fixture
def fake_clock(monkeypatch):
    """One second per update, and validations treated as free, so the fitted length is exact:
    60 s · 0.98 = 58.8 s; after WARMUP updates in WARMUP s the decay ends at update 58."""
    monkeypatch.setattr(Trainer, "_elapsed", lambda self, start: float(self.progress.step))
    real = budget.fit_schedule_steps
    monkeypatch.setattr(trainer_module, "fit_schedule_steps",
                        lambda step, elapsed, total, max_steps, cycles, per_cycle: real(step, elapsed, total, max_steps))
    return 4 + int(58.8 - 4)


def _lrs(trainer: Trainer) -> list[float]:
    lrs = []
    update = trainer._update

    def wrapped(group):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return update(group)

    trainer._update = wrapped
    return lrs


def test_decay_fitted_to_the_budget_ends_at_min_lr_and_stops_training(tmp_path, fake_clock):
    fitted = _trainer(tmp_path / "fitted", fit=True)
    lrs = _lrs(fitted)
    results = fitted.train()
    assert fitted.progress.schedule_steps == fake_clock
    assert fitted.progress.step == fake_clock < MAX_STEPS
    assert "fitted to max_time_minutes" in results["stop_reason"]
    assert results["fitted_schedule_steps"] == fake_clock
    assert len(fitted.progress.cycle_seconds) == len(fitted.progress.history) > 1
    assert lrs[-1] == pytest.approx(MIN_LR + (3e-3 - MIN_LR) * 0.5 * (1 + math.cos(math.pi * 53 / 54)))
    assert fitted.scheduler.get_last_lr()[0] == pytest.approx(MIN_LR)

    plain = _trainer(tmp_path / "plain", fit=False)
    plain.cfg.train.max_steps = MAX_STEPS
    plain_lrs = _lrs(plain)
    plain.cfg.train.max_epochs = 2
    plain.train()
    # warmup (and the first decay update) is the same curve; afterwards the fitted one falls faster
    assert lrs[:WARMUP + 1] == plain_lrs[:WARMUP + 1]
    assert lrs[WARMUP + 2] < plain_lrs[WARMUP + 2]


def test_fitted_schedule_resumes_bitwise(tmp_path, fake_clock):
    straight = _trainer(tmp_path / "straight", fit=True)
    expected = _record(straight)
    straight.train()

    first = _trainer(tmp_path / "resumed", fit=True)
    losses = _record(first, stop_at=20)  # after the fit at update WARMUP
    with pytest.raises(TrainingInterrupted):
        first.train()
    resumed = _trainer(tmp_path / "resumed", fit=True)
    assert resumed.progress.schedule_steps == fake_clock  # from the checkpoint, not measured again
    rest = _record(resumed)
    resumed.train()
    assert resumed.progress.step == straight.progress.step == fake_clock
    assert len(losses) == 20 and losses + rest == expected
    after, reference = _params(resumed), _params(straight)
    assert all(torch.equal(after[k], reference[k]) for k in reference)

"""train.fit_schedule_to_time: the decay is fitted to the time budget when warmup ends
(nmt.train.budget), ends at min_lr, stops training there, and survives a resume bitwise."""
from __future__ import annotations

import math
import time

import pytest
import torch

from nmt.config import Config, OptimConfig, TrainConfig
from nmt.config_checks import validate
from nmt.train import budget, optim
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


def test_updates_before_validate_after_carry_no_validation_cost():
    # u = 1 s; validations 20 s every 50 updates -> 1.4 s per update once they begin
    fit = budget.fit_schedule_steps
    assert fit(100, 120.0, 1000.0, 0, [20.0], 50, reserve=0.0, validate_after=100) == 100 + int(880 / 1.4)
    # none before update 500: 400 updates at 1 s, then the remaining 480 s at 1.4 s
    assert fit(100, 120.0, 1000.0, 0, [20.0], 50, reserve=0.0, validate_after=500) == 500 + int(480 / 1.4)
    # the budget ends before validations would begin: 880 updates at 1 s
    assert fit(100, 120.0, 1000.0, 0, [20.0], 50, reserve=0.0, validate_after=5000) == 100 + 880
    assert fit(100, 120.0, 1000.0, 700, [20.0], 50, reserve=0.0, validate_after=500) == 700  # max_steps


def test_a_plan_is_shortened_only_when_it_no_longer_fits_the_whole_budget():
    # 1 s per update: 100 done in 100 s, the plan ends at 1,000 = 1,000 s: it fits, it stands
    assert budget.refit_schedule_steps(100, 100.0, 1000.0, 1000) == 1000
    # 981 s projected: inside the budget but in its last 2%, where a fresh fit would end at 989;
    # the plan stands (no shortening for a small change of speed)
    assert budget.refit_schedule_steps(100, 99.0, 1000.0, 990 + 1) == 991
    # 1.5 s per update: 1,350 s projected; refitted to 980 s: 100 + int(830 / 1.5) = 653
    assert budget.refit_schedule_steps(100, 150.0, 1000.0, 1000) == 653
    # faster than planned: never lengthened
    assert budget.refit_schedule_steps(100, 50.0, 1000.0, 300) == 300
    # validations count: u = 1 + 10 s every 10 updates = 2 s; 100 + 900 * 2 > 1,000
    assert budget.refit_schedule_steps(100, 100.0, 1000.0, 1000, [0.0, 10.0], 10) < 1000
    # at or past the end: nothing to refit
    assert budget.refit_schedule_steps(1000, 5000.0, 1000.0, 1000) == 1000
    # out of time: the decay ends at the next update
    assert budget.refit_schedule_steps(100, 1200.0, 1000.0, 500) == 101


def test_a_shortened_decay_is_continuous_and_ends_at_the_floor():
    fn = optim.lr_lambda(scheduler="cosine", lr=1e-3, warmup_steps=10, warmup_init_lr=0.0, min_lr=1e-5,
                         d_model=256, total_steps=110)
    short = optim.shorten_decay(fn, 40, 70, "cosine", 1e-5 / 1e-3)
    assert [short(s) for s in range(41)] == [fn(s) for s in range(41)]
    values = [short(s) for s in range(40, 80)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # no jump up at the shortening
    assert short(41) == pytest.approx(fn(40), rel=1e-2) and short(41) < fn(40)
    assert short(70) == pytest.approx(1e-2) and short(75) == pytest.approx(1e-2)
    assert short(70) < fn(70)
    linear = optim.shorten_decay(fn, 40, 70, "linear", 0.0)
    assert linear(55) == pytest.approx(fn(40) / 2)
    with pytest.raises(ValueError, match="must end after update 40"):
        optim.shorten_decay(fn, 40, 40, "cosine", 0.0)
    with pytest.raises(ValueError, match="cosine or linear"):
        optim.shorten_decay(fn, 40, 70, "inverse_sqrt", 0.0)


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
    monkeypatch.setattr(Trainer, "elapsed", lambda self, start: float(self.progress.step))
    real, real_refit = budget.fit_schedule_steps, budget.refit_schedule_steps
    monkeypatch.setattr(budget, "fit_schedule_steps",
                        lambda step, elapsed, total, max_steps, *rest, **kw: real(step, elapsed, total, max_steps))
    monkeypatch.setattr(budget, "refit_schedule_steps",
                        lambda step, elapsed, total, planned, *rest: real_refit(step, elapsed, total, planned))
    return 4 + int(58.8 - 4)


SLOW_AFTER, SLOW = 20, 1.25  # seconds per update from update SLOW_AFTER on


@pytest.fixture
def slowing_clock(fake_clock, monkeypatch):
    """As fake_clock, but the machine slows down after the fit: 1.25 s per update from update
    20 on. The plan made at update 4 (end 58) would take 67.5 s of the 60."""
    monkeypatch.setattr(Trainer, "elapsed", lambda self, start: float(
        min(self.progress.step, SLOW_AFTER) + SLOW * max(0, self.progress.step - SLOW_AFTER)))
    return fake_clock


def _lrs(trainer: Trainer) -> list[float]:
    lrs = []
    update = trainer.step

    def wrapped(group):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return update(group)

    trainer.step = wrapped
    return lrs


def test_decay_fitted_to_the_budget_ends_at_min_lr_and_stops_training(tmp_path, fake_clock):
    fitted = _trainer(tmp_path / "fitted", fit=True)
    lrs = _lrs(fitted)
    results = fitted.train()
    assert fitted.budget.schedule_steps == fake_clock
    assert fitted.progress.step == fake_clock < MAX_STEPS
    assert "fitted to max_time_minutes" in results["stop_reason"]
    assert results["fitted_schedule_steps"] == fake_clock
    assert len(fitted.budget.cycle_seconds) == len(fitted.progress.history) > 1
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
    assert resumed.budget.schedule_steps == fake_clock  # from the checkpoint, not measured again
    rest = _record(resumed)
    resumed.train()
    assert resumed.progress.step == straight.progress.step == fake_clock
    assert len(losses) == 20 and losses + rest == expected
    after, reference = _params(resumed), _params(straight)
    assert all(torch.equal(after[k], reference[k]) for k in reference)


def test_a_slowdown_after_the_fit_shortens_the_decay_so_it_still_ends_in_time(tmp_path, slowing_clock, monkeypatch):
    slowed = _trainer(tmp_path / "refitted", fit=True)
    lrs = _lrs(slowed)
    results = slowed.train()
    p, b = slowed.progress, slowed.budget
    assert b.schedule_steps == slowing_clock  # the plan made when warmup ended
    assert b.schedule_refits and all(end < slowing_clock for _, end in b.schedule_refits)
    assert results["schedule_refits"] == b.schedule_refits
    assert "fitted to max_time_minutes" in results["stop_reason"] and p.step == b.schedule_end
    assert slowed.elapsed(0.0) <= 60.0
    assert slowed.scheduler.get_last_lr()[0] == pytest.approx(MIN_LR)
    decay = lrs[WARMUP:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # each shortening starts from the current lr

    # without the later check the same slowdown leaves the run cut off by the clock, high up the cosine
    monkeypatch.setattr(budget, "refit_schedule_steps", lambda step, elapsed, total, planned, *a: planned)
    cut = _trainer(tmp_path / "cut", fit=True)
    results = cut.train()
    assert "reached max_time_minutes" in results["stop_reason"] and cut.progress.step < slowing_clock
    assert cut.scheduler.get_last_lr()[0] > 10 * MIN_LR


def test_a_shortened_schedule_resumes_bitwise(tmp_path, slowing_clock):
    straight = _trainer(tmp_path / "straight", fit=True)
    expected = _record(straight)
    straight.train()
    assert straight.budget.schedule_refits
    at = straight.budget.schedule_refits[0][0] + 3

    first = _trainer(tmp_path / "resumed", fit=True)
    losses = _record(first, stop_at=at)  # after the first shortening
    with pytest.raises(TrainingInterrupted):
        first.train()
    resumed = _trainer(tmp_path / "resumed", fit=True)
    assert resumed.budget.schedule_refits == straight.budget.schedule_refits[:1]
    rest = _record(resumed)
    resumed.train()
    assert resumed.budget.schedule_refits == straight.budget.schedule_refits
    assert len(losses) == at and losses + rest == expected
    after, reference = _params(resumed), _params(straight)
    assert all(torch.equal(after[k], reference[k]) for k in reference)


@pytest.mark.parametrize("fit", [False, True])
def test_no_validation_before_validate_after_updates(tmp_path, fake_clock, monkeypatch, fit):
    seen = {}
    real = budget.fit_schedule_steps

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(budget, "fit_schedule_steps", spy)
    run = _trainer(tmp_path / "run", fit=fit)
    run.cfg.train.validate_after_updates = AFTER = 30
    run.cfg.train.max_steps = 50
    run.cfg.train.max_epochs = 100
    run.train()
    steps = [h["step"] for h in run.progress.history]
    assert len(run.budget.cycle_seconds) == len(steps)
    if fit:  # one validation when warmup ends times the cycle for the fitted schedule
        assert seen["validate_after"] == AFTER
        assert steps[0] == WARMUP and min(steps[1:]) >= AFTER
    else:
        assert min(steps) >= AFTER
    assert steps[-1] == run.progress.step and len(steps) >= 2
    assert sorted(set(steps)) == steps


def test_validate_after_updates_must_not_be_negative():
    cfg = Config()
    cfg.train.validate_after_updates = -1
    with pytest.raises(ValueError, match="validate_after_updates"):
        validate(cfg)


DRAW = 0.8  # seconds of a fake alignment-figure drawing


def _drawing_trainer(run_dir, monkeypatch, stop_after_first_validation: bool = False) -> tuple[Trainer, list[bool]]:
    """A trainer of 30 updates whose alignment figures, drawn at every 4th validation (the first
    included), take DRAW seconds; the list records, per validation, whether it drew them."""
    run = _trainer(run_dir, fit=False)
    run.cfg.train.max_steps, run.cfg.train.attention.every = 30, 4
    drawn = []

    def log_attention(dev_hyps, step, validations):
        draws = (validations - 1) % run.cfg.train.attention.every == 0
        drawn.append(draws)
        if draws:
            time.sleep(DRAW)
        if stop_after_first_validation:
            run.request_stop("test")
        return DRAW if draws else 0.0

    monkeypatch.setattr(run.validator, "log_attention", log_attention)
    return run, drawn


def test_each_cycle_carries_its_share_of_the_alignment_figures(tmp_path, monkeypatch):
    """The figures are drawn at every 4th validation (the first included); the time of each
    validate-and-checkpoint cycle, which the fitted schedule averages, carries a quarter of a
    drawing, so the first cycle alone is no longer ~4x too expensive an estimate."""
    run, drawn = _drawing_trainer(tmp_path / "run", monkeypatch)
    run.train()
    cycles = run.budget.cycle_seconds
    assert drawn[0] and drawn.count(True) >= 2 and drawn.count(False) >= 3
    assert len(cycles) == len(drawn)
    drawing = [c for c, d in zip(cycles, drawn) if d]
    plain = [c for c, d in zip(cycles, drawn) if not d]
    assert min(cycles) >= DRAW / 4, cycles  # every cycle carries a quarter of a drawing
    assert max(drawing) - min(plain) < DRAW / 2, cycles  # and the drawing ones no more than that


def test_a_resumed_run_keeps_its_share_of_the_figures(tmp_path, monkeypatch):
    """The share is a checkpointed counter: after a resume, the cycles before the next drawing
    still carry a quarter of the last drawing, as they would have without the interruption."""
    first, drawn = _drawing_trainer(tmp_path / "run", monkeypatch, stop_after_first_validation=True)
    with pytest.raises(TrainingInterrupted):
        first.train()
    assert drawn == [True] and first.budget.figure_share == pytest.approx(DRAW / 4)
    resumed, drawn = _drawing_trainer(tmp_path / "run", monkeypatch)
    assert resumed.budget.figure_share == pytest.approx(DRAW / 4)
    resumed.train()
    after = resumed.budget.cycle_seconds[1:]
    assert len(after) == len(drawn) >= 2 and not drawn[0], drawn
    plain = [c for c, d in zip(after, drawn) if not d]
    assert min(plain) >= DRAW / 4, after  # a fresh counter would time these cycles at ~0

"""Fit a decaying learning-rate schedule to a wall-clock budget.

A cosine (or linear) schedule anneals over a fixed number of updates, ``train.max_steps``,
chosen for one machine: 3,800 updates of the Multi30k Transformer fit in 60 minutes on the
2-core reference CPU. On a machine half as fast ``train.max_time_minutes`` stops that run
halfway down the cosine, at a high learning rate, and the model is worse than a shorter
schedule that ends at ``min_lr`` (Li, Yumer & Ramanan 2020, "Budgeted training: rethinking
deep neural network training under resource constraints", ICLR: a schedule that decays to
zero at the end of the budget beats a truncated one at every budget).

With ``train.fit_schedule_to_time=true`` the trainer measures its own speed when warmup ends
(the decay has not begun, so the learning rate so far is the same either way) and sets the
schedule's length to the updates that fit in the remaining time, at most ``max_steps``. The
estimate counts validations: each validate-and-checkpoint cycle is timed, and its mean cost is
spread over the updates between validations. The first cycle is left out of the mean: what an
untrained model outputs (too short, or running to the length limit) makes its decoding time
unrepresentative (it was a third faster than every later one on Multi30k; docs/performance.md). The length is saved in every checkpoint, so a resumed run
keeps it and resumes bitwise as before.

With ``train.validate_after_updates`` (fairseq's ``--validate-after-updates``) there is no
validation before that update, so the updates before it carry no share of the validations'
cost. The fit still needs one timed cycle: the trainer validates once when warmup ends. That
first validation draws the alignment figures, which later ones draw only every
``train.attention.every``-th time, so each cycle is timed with that share of the drawing
(:meth:`TimeBudget.record_cycle`): the one cycle does not stand for four times the figures.

A shared machine can slow down after the fit, and the budget would then stop the run before
the planned end, before the learning rate has annealed. So after every later validation the plan is checked again
(:func:`refit_schedule_steps`): when the planned end no longer fits in the whole budget, the
decay is shortened, from the current update and learning rate, to what fits in the budget less
the reserve. A plan is never lengthened, and the reserve keeps small changes of speed from
shortening it again and again.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Optional, Sequence

log = logging.getLogger("nmt.train")

RESERVE = 0.02  # fraction of the budget left for the closing validation and checkpoint


def fit_schedule_steps(step: int, elapsed_seconds: float, budget_seconds: float, max_steps: int,
                       cycle_seconds: Sequence[float] = (), steps_per_cycle: float = math.inf,
                       reserve: float = RESERVE, validate_after: int = 0) -> int:
    """Total updates of a schedule that ends inside a wall-clock budget.

    Time per update u = (elapsed − Σ cycles) / step; a validation cycle costs c (the mean of
    ``cycle_seconds[1:]``, or of all when there is one) every ``steps_per_cycle`` updates, so
    an update costs u + c / steps_per_cycle in all, and the updates after ``step`` fill
    ``budget · (1 − reserve) − elapsed``. The updates before ``validate_after`` are not
    followed by validations and cost u alone.

    Args:
        step: updates done (> 0).
        elapsed_seconds: wall time since training started (validations included).
        budget_seconds: ``train.max_time_minutes · 60``.
        max_steps: the upper bound (``train.max_steps``; 0 = none).
        cycle_seconds: wall time of each validate-and-checkpoint cycle so far.
        steps_per_cycle: updates between two validations.
        reserve: fraction of the budget kept free at the end.
        validate_after: the first update that may be followed by a validation
            (``train.validate_after_updates``; 0 = every one).
    Returns:
        The schedule's length in updates: at least ``step + 1``, at most ``max_steps``.
    Raises:
        ValueError: ``step < 1`` or a budget that is not positive.
    """
    if step < 1:
        raise ValueError(f"the schedule is fitted after at least one update, got step={step}")
    if budget_seconds <= 0:
        raise ValueError(f"the time budget must be positive, got {budget_seconds} s")
    per_update = seconds_per_update(step, elapsed_seconds, cycle_seconds, steps_per_cycle)
    bare = seconds_per_update(step, elapsed_seconds, cycle_seconds)  # without the validations' share
    remaining = budget_seconds * (1.0 - reserve) - elapsed_seconds
    unvalidated = max(0, validate_after - step)  # updates still to come before validations begin
    if remaining <= 0:
        more = 0
    elif remaining <= unvalidated * bare:
        more = int(remaining / bare)
    else:
        more = unvalidated + int((remaining - unvalidated * bare) / per_update)
    fitted = step + max(1, more)
    return min(fitted, max_steps) if max_steps > 0 else fitted


def seconds_per_update(step: int, elapsed_seconds: float, cycle_seconds: Sequence[float] = (),
                       steps_per_cycle: float = math.inf) -> float:
    """Wall seconds one more update costs, its share of the validations included: the mean
    update time so far, (elapsed − Σ cycles) / step, plus the mean cost of a validation cycle
    (the first left out when there are others) over ``steps_per_cycle``. ``step`` must be ≥ 1."""
    overhead = float(sum(cycle_seconds))
    per_update = max(elapsed_seconds - overhead, 1e-9) / step
    later = list(cycle_seconds[1:]) or list(cycle_seconds)
    if later and steps_per_cycle > 0 and math.isfinite(steps_per_cycle):
        per_update += sum(later) / len(later) / steps_per_cycle
    return per_update


def refit_schedule_steps(step: int, elapsed_seconds: float, budget_seconds: float, planned_steps: int,
                         cycle_seconds: Sequence[float] = (), steps_per_cycle: float = math.inf,
                         reserve: float = RESERVE) -> int:
    """The schedule's end after checking a fitted plan again (after a validation).

    The plan stands while its projected end, ``elapsed + (planned_steps − step) · u`` with u
    from :func:`seconds_per_update`, is inside the whole budget. Otherwise the machine has
    become slower than when the plan was made, and the end is fitted again with
    :func:`fit_schedule_steps` (budget less ``reserve``), which is then earlier.

    Args:
        step: updates done (≥ 1).
        elapsed_seconds, budget_seconds, cycle_seconds, steps_per_cycle, reserve: as in
            :func:`fit_schedule_steps`.
        planned_steps: the schedule's current end.
    Returns:
        ``planned_steps``, or an earlier end (at least ``step + 1``).
    Raises:
        ValueError: as :func:`fit_schedule_steps`.
    """
    if step >= planned_steps:
        return planned_steps
    per_update = seconds_per_update(step, elapsed_seconds, cycle_seconds, steps_per_cycle)
    if elapsed_seconds + (planned_steps - step) * per_update <= budget_seconds:
        return planned_steps
    return fit_schedule_steps(step, elapsed_seconds, budget_seconds, planned_steps, cycle_seconds,
                              steps_per_cycle, reserve)


@dataclass
class TimeBudget:
    """Every field of the wall-clock budget, saved in each checkpoint (``trainer_state["budget"]``)
    so that a resumed run times and fits its schedule as the first session did.

    Attributes:
        cycle_seconds: wall time of each validate-and-checkpoint cycle, with its share of the
            alignment figures (:meth:`record_cycle`).
        schedule_steps: the decay's length fitted when warmup ended (0 = ``train.max_steps``).
        schedule_refits: ``[update, new end]`` of each later shortening.
        figure_share: seconds of the last figure drawing / ``train.attention.every``.
    """

    cycle_seconds: list = field(default_factory=list)
    schedule_steps: int = 0
    schedule_refits: list = field(default_factory=list)
    figure_share: float = 0.0

    @property
    def schedule_end(self) -> int:
        """The update at which the fitted decay ends now (0 = no fit, ``train.max_steps``)."""
        return self.schedule_refits[-1][1] if self.schedule_refits else self.schedule_steps

    def record_cycle(self, seconds: float, figure_seconds: float, every: int) -> None:
        """Time one validate-and-checkpoint cycle. The figures are drawn at every ``every``-th
        validation only, so each cycle carries that share of their time (the last drawing's)
        rather than the drawing cycle all of it."""
        if figure_seconds > 0:
            self.figure_share = figure_seconds / max(1, every)
        self.cycle_seconds.append(round(seconds - figure_seconds + self.figure_share, 3))

    def exhausted(self, step: int, elapsed_seconds: float, max_steps: int, max_minutes: float) -> Optional[str]:
        """Why training must stop now, or None (the clock alone: see :meth:`out_of_time`)."""
        if max_steps > 0 and step >= max_steps:
            return f"reached max_steps={max_steps}"
        if self.schedule_end and step >= self.schedule_end:
            return (f"reached the end of the schedule fitted to max_time_minutes={max_minutes} "
                    f"({self.schedule_end} updates)")
        return None

    @staticmethod
    def out_of_time(elapsed_seconds: float, max_minutes: float) -> bool:
        return max_minutes > 0 and elapsed_seconds >= max_minutes * 60

    def fit(self, step: int, elapsed: float, tc, steps_per_cycle: float, scheduler: str,
            agree: Callable[[int], int] = lambda steps: steps) -> None:
        """``train.fit_schedule_to_time``: set :attr:`schedule_steps` to the updates that fit in
        ``max_time_minutes`` (:func:`fit_schedule_steps`); ``agree`` takes the smallest over the
        processes of a distributed job."""
        self.schedule_steps = agree(fit_schedule_steps(step, elapsed, tc.max_time_minutes * 60, tc.max_steps,
                                                       self.cycle_seconds, steps_per_cycle,
                                                       validate_after=tc.validate_after_updates))
        log.info("schedule fitted to train.max_time_minutes=%g: the %s decay ends at update %d%s (%d updates in "
                 "%.1f min so far, %d validations taking %.1f min)", tc.max_time_minutes, scheduler,
                 self.schedule_steps, " (train.max_steps)" if self.schedule_steps == tc.max_steps else "", step,
                 elapsed / 60, len(self.cycle_seconds), sum(self.cycle_seconds) / 60)

    def refit(self, step: int, elapsed: float, max_minutes: float, steps_per_cycle: float, scheduler: str,
              agree: Callable[[int], int] = lambda steps: steps) -> bool:
        """After a validation: end the fitted decay earlier when it no longer fits the budget
        (:func:`refit_schedule_steps`); returns whether it did."""
        end = self.schedule_end
        if not end or step >= end:
            return False
        steps = agree(refit_schedule_steps(step, elapsed, max_minutes * 60, end, self.cycle_seconds, steps_per_cycle))
        if steps >= end:
            return False
        self.schedule_refits.append([step, steps])
        log.info("schedule shortened to fit train.max_time_minutes=%g: the %s decay now ends at update %d instead of "
                 "%d (%d updates in %.1f min so far)", max_minutes, scheduler, steps, end, step, elapsed / 60)
        return True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> "TimeBudget":
        """From a checkpoint's ``budget`` (or, in checkpoints written before it had its own
        entry, from ``progress``, which then held these fields)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})

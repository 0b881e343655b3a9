"""What a training checkpoint holds besides the weights, and putting it back (RELIABILITY.md
R6-R8): optimizer, scheduler, loss scaler, counters, time budget, data position and every
process's RNG states, so that a resumed run continues bitwise as if it had not stopped."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from nmt.train import checkpoint as ckpt_io
from nmt.train.budget import TimeBudget
from nmt.train.checkpoints import Checkpoints
from nmt.train.distributed import DistContext
from nmt.train.state import Progress, restore_rng, rng_state

log = logging.getLogger("nmt.train")


def trainer_state(optimizer, scheduler, scaler, sampler, progress: Progress, budget: TimeBudget,
                  rng_ranks: Optional[list] = None) -> dict:
    """The ``trainer_state.pt`` of a checkpoint (loadable with ``weights_only``); ``rng_ranks``:
    every process's RNG states in a distributed job."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "progress": progress.to_dict(),
             "budget": budget.to_dict(), "sampler": sampler.state_dict(), "rng": rng_state(),
             "scaler": scaler.state_dict() if scaler is not None else {}}
    if rng_ranks is not None:
        state["rng_ranks"] = rng_ranks
    return state


def restore(ckpt: Path, checkpoints: Checkpoints, model, optimizer, scheduler, scaler, sampler, device,
            dist: DistContext, seed: int) -> tuple[Progress, TimeBudget]:
    """Load ``ckpt`` into the training objects; returns its counters and time budget.

    Raises:
        nmt.train.state.RunDirError: another configuration or tokenizer (:meth:`Checkpoints.read`).
        nmt.checkpoint.CheckpointError: a file is missing or does not match the model/optimizer.
    """
    from safetensors.torch import load_model as st_load

    _, state = checkpoints.read(ckpt)
    try:
        st_load(model, str(ckpt / "model.safetensors"), device=str(device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = Progress.from_dict(state["progress"])
        budget = TimeBudget.from_dict(state.get("budget") or state["progress"])  # older checkpoints: in progress
        sampler.load_state_dict(state["sampler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng(state, dist.rank, dist.world_size, seed, progress.step)
    except Exception as err:
        raise ckpt_io.CheckpointError(f"checkpoint {ckpt} does not match this model/optimizer: {err}") from err
    progress.epoch = sampler.state_dict()["epoch"]  # at an epoch boundary the sampler has moved on
    checkpoints.last_saved_step = progress.step
    log.info("resuming from %s: step %d, epoch %d (batch %d of it), %.1f min trained, best dev BLEU %.2f", ckpt,
             progress.step, progress.epoch, sampler.state_dict()["batches_consumed"], progress.train_seconds / 60,
             progress.best_bleu)
    return progress, budget

"""Data-parallel training with ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node N --no-python nmt-train ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous (``MASTER_ADDR``/``MASTER_PORT``) in their
environment; multi-node runs add ``--nnodes``/``--rdzv-endpoint``. :func:`init_distributed`
reads them and joins the process group (NCCL on GPUs, Gloo on CPUs). Without those variables
everything here is a no-op for one process, so the trainer has one code path.

How the work is split (the same as fairseq's data parallelism):

* ``train.update_freq`` is the number of batches per optimizer update for the *whole job*; each
  of the N processes accumulates ``update_freq / N`` of them, so the effective batch
  (``max_tokens x update_freq`` tokens) does not change with N (:func:`per_rank_update_freq`).
* Every process walks the same global batch order (the bucketing sampler is seeded with
  ``seed + epoch``) and keeps the batches whose position in the update group falls to its rank
  (:func:`owns_batch`), so the data position saved in a checkpoint is global and a run can
  resume with another number of processes.
* Gradients are summed over processes by DDP and divided by the global number of target tokens,
  so one update equals the single-process update over the same batches up to floating-point
  summation order.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

log = logging.getLogger("nmt.train")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1 (rank 0 writes checkpoints, logs, TensorBoard).
        world_size: number of processes (1 = not distributed).
        local_rank: rank on this node (selects the GPU).
        backend: ``"nccl"``, ``"gloo"`` or None when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that writes files."""
        return self.rank == 0


SINGLE = DistContext()


class PeerFailed(RuntimeError):
    """Another process of the job failed; this one stops too (R34)."""


def env_rank() -> int:
    """``$RANK`` (0 when not launched by torchrun); readable before anything is initialised."""
    return int(os.environ.get("RANK", "0") or 0)


def init_distributed(device: str = "cpu", timeout_minutes: float = 60.0) -> DistContext:
    """Join the process group described by torchrun's environment variables.

    Args:
        device: the configured ``train.device`` (``cuda``/``auto`` with a GPU -> NCCL, one GPU
            per local rank; otherwise Gloo).
        timeout_minutes: how long a collective may wait (rank 0 validates and decodes while the
            others wait at a broadcast, so this must exceed the longest validation).
    Returns:
        :data:`SINGLE` when ``WORLD_SIZE`` is unset or 1, else the joined context.
    Raises:
        RuntimeError: the rendezvous fails (torchrun's message names the address).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    use_cuda = device in ("cuda", "auto") and torch.cuda.is_available() or device.startswith("cuda:")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend)
    log.info("distributed: rank %d of %d (local rank %d), backend %s", ctx.rank, ctx.world_size, local_rank, backend)
    return ctx


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def per_rank_update_freq(update_freq: int, ctx: DistContext) -> int:
    """Batches each process accumulates per update: ``update_freq / world_size``.

    Raises:
        ValueError: ``update_freq`` is not a multiple of the number of processes (the effective
            batch could not stay the same); the message says what to set.
    """
    if update_freq % ctx.world_size:
        raise ValueError(f"train.update_freq={update_freq} batches per update cannot be split evenly over "
                         f"{ctx.world_size} processes: set train.update_freq to a multiple of {ctx.world_size} "
                         f"(the effective batch is train.max_tokens x train.update_freq tokens for any number of "
                         f"processes; e.g. train.update_freq={ctx.world_size * max(1, update_freq // ctx.world_size)}"
                         f" with train.max_tokens scaled to match)")
    return update_freq // ctx.world_size


def owns_batch(position: int, update_freq: int, ctx: DistContext) -> bool:
    """True when the epoch's batch number ``position`` (0-based, global order) is this rank's:
    in each group of ``update_freq`` consecutive batches, rank r takes the r-th slice of
    ``update_freq / world_size``."""
    per_rank = update_freq // ctx.world_size
    return (position % update_freq) // per_rank == ctx.rank


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op for one)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce(ctx: DistContext, values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over processes in one collective; float64 so token counts stay exact."""
    if not ctx.enabled:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if ctx.backend == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def agree(ctx: DistContext, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (stop signals, time budgets)."""
    return bool(all_reduce(ctx, [float(flag)], op="max")[0]) if ctx.enabled else flag


def smallest(ctx: DistContext, value: int) -> int:
    """The smallest of every process's ``value`` (a distributed job follows one schedule)."""
    return -int(all_reduce(ctx, [-float(value)], op="max")[0]) if ctx.enabled else value


def broadcast_object(ctx: DistContext, obj: Any = None, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every process (picklable objects)."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(ctx: DistContext, obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def check_agreement(ctx: DistContext, what: str, value: Any) -> None:
    """Raise :class:`PeerFailed` on every process when ``value`` is not the same on all (R34)."""
    if not ctx.enabled:
        return
    values = all_gather_object(ctx, value)
    if any(v != values[0] for v in values):
        raise PeerFailed(f"the processes of this job disagree on the {what}: "
                         + "; ".join(f"rank {r}: {v}" for r, v in enumerate(values)))


def check_ranks_agree(ctx: DistContext, cfg, tokenizer, data) -> None:
    """Every process of a distributed job has the same config (but for
    :data:`~nmt.train.state.RANK_LOCAL` keys), tokenizer and data sizes (R34); no-op for one.

    Raises:
        nmt.train.state.RanksDisagree: on every rank, naming the ranks and what differs.
    """
    from nmt.train.state import RANK_LOCAL, RanksDisagree, config_differences

    if not ctx.enabled:
        return
    train = data.train
    mine = {"config": cfg, "tokenizer": tokenizer.sha256(),
            "data": {"train pairs": None if train is None else len(train),
                     "train tokens": None if train is None else int(train.src_lengths.sum() + train.tgt_lengths.sum()),
                     "valid pairs": len(data.valid.src), "test pairs": None if data.test is None else len(data.test.src)}}
    everyone = all_gather_object(ctx, mine)
    problems = []
    for rank, other in enumerate(everyone[1:], 1):
        problems += [f"rank {rank} config {d}" for d in config_differences(everyone[0]["config"], other["config"],
                                                                          RANK_LOCAL)]
        for key in ("tokenizer", "data"):
            if other[key] != everyone[0][key]:
                problems.append(f"rank {rank} {key}: {other[key]} (rank 0: {everyone[0][key]})")
    if problems:
        raise RanksDisagree("the processes of this job disagree (rank 0 -> rank N); every node must see the same "
                            "config, tokenizer and data:\n  " + "\n  ".join(problems))


def rank_batches(positioned, update_freq: int, ctx: DistContext, make, usable: Optional[int] = None):
    """This rank's batches from ``positioned``, ``(epoch position, item)`` pairs in global order:
    ``make(item)`` for the positions it owns (:func:`owns_batch`), none from ``usable`` on (an
    epoch's incomplete last update). In a distributed job a rank's batches are handed out only
    when the whole update group has been read, so every rank's data position, the one saved in
    checkpoints, is the end of the same update."""
    pending = []
    for position, item in positioned:
        if usable is not None and position >= usable:
            continue
        if not ctx.enabled:
            yield make(item)
            continue
        if owns_batch(position, update_freq, ctx):
            pending.append(make(item))
        if position % update_freq == update_freq - 1:
            yield from pending
            pending = []

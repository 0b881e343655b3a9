"""What a checkpoint restores besides the weights and the optimizer: the training counters
(:class:`Progress`), the random generators, and the check that a resumed run has the same
configuration (RELIABILITY.md R6-R9, R27). The time budget's own state is
:class:`nmt.train.budget.TimeBudget`'s."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from nmt.config import Config, resume_allowed

#: the config keys that may change between an interrupted run and its resumption (R9), declared on
#: the fields of nmt.config (MAY_CHANGE_ON_RESUME); a key ending in "." allows a whole group
RESUME_ALLOWED = resume_allowed()
#: config keys that may differ between the processes of one job (where each node keeps its files)
RANK_LOCAL = ("data.dir", "data.tokenizer.cache_dir", "data.hf_cache_dir", "train.progress_bar")


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: it is in use, holds a finished run, is not
    writable, or its checkpoint was written with a different configuration or tokenizer."""


class RanksDisagree(RunDirError):
    """The processes of a distributed job have different configs, tokenizers, data or
    checkpoints (R34); every rank raises it."""


@dataclass
class Progress:
    """Counters saved in every checkpoint."""

    step: int = 0  # optimizer updates
    epoch: int = 1
    best_bleu: float = -1.0
    best_step: int = 0
    bad_validations: int = 0  # validations since the best one (early stopping)
    train_seconds: float = 0.0
    tgt_tokens: int = 0  # target tokens trained on (padding excluded)
    src_tokens: int = 0
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient (R13)
    bad_steps_in_a_row: int = 0
    oom_skips: int = 0  # updates skipped because a batch ran out of memory (R15)
    overflow_skips: int = 0  # fp16 updates skipped by the loss scaler (gradient overflow), apart from NaNs (R14)
    history: list = field(default_factory=list)  # one dict per validation
    stop_reason: str = ""  # early stopping decided at the last validation: a re-run goes straight to the final evaluation

    @classmethod
    def from_dict(cls, state: dict) -> "Progress":
        """From a checkpoint's ``progress`` (keys of other owners, such as the time budget's in
        checkpoints written before it had its own entry, are left out)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (R27)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain values (weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(state: dict, rank: int, world_size: int, seed: int, step: int) -> None:
    """This rank's RNG states from a checkpoint (``rng_ranks`` holds one per process of a
    distributed run). With another number of processes the ranks that have none are re-seeded:
    training goes on correctly, but not bitwise as the uninterrupted run."""
    import logging

    per_rank = state.get("rng_ranks") or [state["rng"]]
    set_rng_state(per_rank[min(rank, len(per_rank) - 1)])
    if len(per_rank) != world_size:
        logging.getLogger("nmt.train").warning(
            "checkpoint was written by %d process(es), this run has %d: dropout streams are re-seeded, so training "
            "is not bitwise the uninterrupted run", len(per_rank), world_size)
        if rank >= len(per_rank):
            torch.manual_seed(seed + 1000003 * rank + step)


def config_differences(old: Config, new: Config, allowed: tuple[str, ...] = RESUME_ALLOWED) -> list[str]:
    """``"key: old -> new"`` for every config key whose value differs, except ``allowed`` ones
    (an entry ending in ``.`` allows every key under it)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v.value if hasattr(v, "value") else v
        return out

    a, b = flat(asdict(old)), flat(asdict(new))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == x or (x.endswith(".") and key.startswith(x)) for x in allowed):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs

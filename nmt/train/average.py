"""Checkpoint averaging (Vaswani et al. 2017 §6.1: the weights of the last checkpoints averaged).

:func:`select_checkpoints` picks the checkpoints (the best N by dev BLEU, or the last N),
:func:`average_checkpoints` averages their weights, and :func:`average_and_keep` loads the
average into a model, scores it on the dev set and saves it, making it the run's ``best``
only when it beats the best single checkpoint. ``nmt-average`` and the trainer's end-of-training
averaging both call :func:`average_and_keep`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from nmt.checkpoint import (WEIGHTS, CheckpointError, check_weights_header, checkpoint_root, complete_checkpoints,
                            read_json)
from nmt.train import checkpoint as ckpt_io

log = logging.getLogger(__name__)

SELECT_BY = ("bleu", "last")
KEEP = ("better", "always")


def _dev_bleu(ckpt: Path) -> Optional[float]:
    """``meta["valid"]["bleu"]`` of a checkpoint, or None when it was saved without validation."""
    try:
        meta = read_json(ckpt / "meta.json")
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    valid = meta.get("valid")
    bleu = valid.get("bleu") if isinstance(valid, dict) else None
    return float(bleu) if isinstance(bleu, (int, float)) and not isinstance(bleu, bool) else None


def _meta_step(ckpt: Path) -> int:
    step = read_json(ckpt / "meta.json").get("step", 0)
    return step if isinstance(step, int) else 0


def select_checkpoints(ckpt_dir: str | Path, n: int, by: str = "bleu", warn: bool = True,
                       min_step: int = 0) -> list[Path]:
    """The ``n`` step checkpoints of a run to average, oldest first.

    Args:
        ckpt_dir: the run's ``checkpoints/`` directory (or the run directory).
        n: how many (at least 2); fewer are taken, with a warning, when fewer exist.
        by: ``"bleu"``: the ``n`` with the highest dev BLEU stored in ``meta.json``
            (``meta["valid"]["bleu"]``, written at each validation; ties go to the later step);
            checkpoints saved without a validation are skipped. ``"last"``: the ``n`` latest steps.
        warn: log skipped checkpoints and a short selection (off for the trainer's pruning).
        min_step: ``"last"`` takes only checkpoints from this update on: the end of training,
            never one saved before ``train.validate_after_updates`` (a warm-up checkpoint far
            from the others would be averaged across the gap).

    Only complete ``step-*`` directories count (``averaged`` and other names are ignored).

    Raises:
        ValueError: ``n < 2``, an unknown ``by``, fewer than 2 eligible checkpoints (the message
            names the directory and, for ``by="bleu"``, the checkpoints without a dev BLEU).
    """
    if by not in SELECT_BY:
        raise ValueError(f"by={by!r}: choose one of {', '.join(SELECT_BY)}")
    if n < 2:
        raise ValueError(f"averaging needs at least 2 checkpoints, n={n}")
    root = checkpoint_root(ckpt_dir)
    steps = [c for c in complete_checkpoints(root) if c.name.startswith("step-")]  # oldest first
    if by == "bleu":
        scored = [(c, _dev_bleu(c)) for c in steps]
        missing = [c.name for c, b in scored if b is None]
        if missing and warn:
            log.warning("%s: %d checkpoints have no dev BLEU in meta.json and are not candidates: %s",
                        root, len(missing), ", ".join(missing))
        ranked = sorted(((b, i, c) for i, (c, b) in enumerate(scored) if b is not None), reverse=True)
        chosen = sorted((i, c) for _, i, c in ranked[:n])
        eligible, picked = len(ranked), [c for _, c in chosen]
        if eligible < 2:
            raise ValueError(f"{root}: {eligible} step checkpoints with a dev BLEU in meta.json (meta['valid']"
                             f"['bleu']); at least 2 are needed to average by BLEU"
                             + (f" (without one: {', '.join(missing)}); try by=last" if missing else ""))
    else:
        late = [c for c in steps if _meta_step(c) >= min_step]
        if len(late) < len(steps) and warn:
            log.info("%s: %d checkpoints before update %d are not averaged (train.validate_after_updates)", root,
                     len(steps) - len(late), min_step)
        steps = late
        eligible, picked = len(steps), steps[-n:]
        if eligible < 2:
            before = f" from update {min_step} on (train.validate_after_updates)" if min_step else ""
            raise ValueError(f"{root}: {eligible} complete step-* checkpoints{before}; at least 2 are needed to "
                             "average (raise train.keep_last to keep more)")
    if eligible < n and warn:
        log.warning("%s: only %d eligible checkpoints, averaging those instead of %d", root, eligible, n)
    return picked


def average_checkpoints(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights in ``<ckpt>/model.safetensors`` for each path
    (accumulated in float64, returned in float32).

    Returns a state dict (tied weights appear under the name safetensors stored).

    Raises:
        ValueError: when ``paths`` is empty or the checkpoints hold different tensors.
    """
    from safetensors.torch import load_file

    if not paths:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_file(str(Path(path) / "model.safetensors"))
        if total and set(state) != set(total):
            raise ValueError(f"{path} holds different tensors from {paths[0]}")
        for k, v in state.items():
            if k in total and total[k].shape != v.shape:
                raise ValueError(f"{path}: tensor {k} has shape {tuple(v.shape)}, {paths[0]} has "
                                 f"{tuple(total[k].shape)}")
            total[k] = total[k] + v.double() if k in total else v.double()
    return {k: (v / len(paths)).float() for k, v in total.items()}


def load_averaged(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy an averaged state dict into ``model``; a parameter missing from ``state`` is allowed
    only when it is tied to (shares storage with) one that is present.

    Raises:
        ValueError: ``state`` has tensors the model lacks, or lacks an untied one it has.
    """
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    untied = [k for k in missing if own[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(f"averaged weights do not match the model: missing {sorted(untied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")


@dataclass
class AverageOutcome:
    """What :func:`average_and_keep` did. BLEU values are sacrebleu scores (0-100) on the dev set."""

    paths: list[Path]  # the checkpoints averaged, oldest first
    scores: dict  # the average's dev scores (at least "bleu")
    best_bleu: float  # the dev BLEU it was compared with
    kept: bool  # it became the run's "best" in checkpoints.json
    saved: Optional[Path] = None  # where the average was written (None: not written)
    notes: list[str] = field(default_factory=list)

    @property
    def bleu(self) -> float:
        return float(self.scores["bleu"])


def _output_dir(out: Optional[Path], ckpt_root: Path) -> tuple[Path, bool]:
    """The averaged checkpoint's directory and whether it lies in the run's ``checkpoints/``.

    Raises:
        ValueError: a ``step-*`` name in the run, which would replace a training checkpoint.
    """
    out = Path(out) if out is not None else ckpt_root / "averaged"
    in_run = out.resolve().parent == ckpt_root.resolve()
    if in_run and out.name.startswith("step-"):
        raise ValueError(f"{out}: a step-* name would replace a training checkpoint; choose another name")
    return out, in_run


def _check_headers(model: torch.nn.Module, paths: list[Path]) -> None:
    """The tensors each file declares match ``model``, before any is read into memory (R30).

    Raises:
        ValueError: naming the file and the mismatch.
    """
    for path in paths:
        try:
            check_weights_header(model, path / WEIGHTS)
        except CheckpointError as err:
            raise ValueError(str(err)) from None


def average_and_keep(model: torch.nn.Module, paths: Sequence[Path], dev_scores: Callable[[torch.nn.Module], Any],
                     best_bleu: float, cfg: Any, tokenizer: Any, ckpt_root: Path, out: Optional[Path] = None,
                     keep: str = "better", save: str = "always", meta: Optional[dict] = None) -> AverageOutcome:
    """Average ``paths`` into ``model``, score it on dev, save it, and make it ``best`` if it wins.

    Args:
        model: a model of the checkpoints' architecture; it ends up holding the average when it is
            kept (or ``keep="always"``), else its previous weights are restored.
        dev_scores: ``model -> dev BLEU`` (a float) or a :func:`nmt.evaluate.score_corpus` dict.
        best_bleu: the dev BLEU of the best single checkpoint, measured the same way.
        cfg, tokenizer: written into the averaged checkpoint (see
            :func:`nmt.train.checkpoint.save_checkpoint`), which loads like any other.
        ckpt_root: the run's ``checkpoints/`` directory, whose ``checkpoints.json`` gets
            ``best``/``best_bleu`` when the average is kept.
        out: the averaged checkpoint's directory (default ``ckpt_root/averaged``). Outside
            ``ckpt_root`` it is written but cannot become the run's ``best``.
        keep: ``"better"``: kept only when its dev BLEU is strictly higher than ``best_bleu``;
            ``"always"``: kept regardless.
        save: ``"always"``: written in every case; ``"kept"``: written only when kept.
        meta: extra ``meta.json`` entries (``step`` defaults to the newest averaged step).

    Raises:
        ValueError: bad ``keep``/``save`` or checkpoints that do not match ``model``.
    """
    if keep not in KEEP or save not in ("always", "kept"):
        raise ValueError(f"keep={keep!r} (choose {', '.join(KEEP)}), save={save!r} (choose always, kept)")
    paths = [Path(p) for p in paths]
    out, in_run = _output_dir(out, Path(ckpt_root))
    _check_headers(model, paths)
    current_best = ckpt_io.read_index(Path(ckpt_root)).get("best")
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    load_averaged(model, average_checkpoints(paths))
    scores = dev_scores(model)
    scores = dict(scores) if isinstance(scores, Mapping) else {"bleu": float(scores)}
    kept = keep == "always" or scores["bleu"] > best_bleu
    outcome = AverageOutcome(paths, scores, best_bleu, kept and in_run)
    if kept and not in_run:
        outcome.notes.append(f"{out} is outside {ckpt_root}: checkpoints.json is left unchanged")
    protect = not kept and in_run and out.name == current_best
    if protect:
        outcome.notes.append(f"{out} is the run's best and the new average is not better: not overwritten")
    if (kept or save == "always") and not protect:
        steps = [_meta_step(p) for p in paths]
        info = {"step": max(steps), "averaged": [p.name for p in paths], "valid": scores, **(meta or {})}
        outcome.saved = ckpt_io.save_checkpoint(out.parent, out.name, model, cfg, tokenizer, info)
    if outcome.kept:
        index = ckpt_io.read_index(Path(ckpt_root))
        index.update(best=out.name, best_bleu=scores["bleu"])
        ckpt_io.write_index(Path(ckpt_root), index)
    if not kept:
        model.load_state_dict(backup)
    log.info("average of %d checkpoints (%s): dev BLEU %.2f vs best %.2f -> %s", len(paths),
             ", ".join(p.name for p in paths), scores["bleu"], best_bleu,
             "kept as best" if outcome.kept else "not kept")
    return outcome

#!/usr/bin/env python
"""Training curves from TensorBoard logs: dev BLEU and loss against wall-clock minutes, one line
per run, as one PNG (for docs/results.md).

Usage::

    python scripts/plot_curves.py runs/multi30k_transformer_en-de runs/multi30k_rnn_bahdanau_additive_global_en-de \\
        --labels "Transformer,BiGRU + Bahdanau" --out docs/figures/curves_en-de.png

Each argument is a run directory (its ``tensorboard/`` folder is read) or a TensorBoard log
directory. Time is the wall-clock time of each event since the run's first event, in minutes
(a resumed run shows its pause as a gap). Reads the scalars ``valid/bleu``, ``train/loss`` and
``valid/loss`` written by ``nmt-train``.

Exits with status 2 and a message naming the path when a directory holds no event file or no
``valid/bleu`` scalar.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TAGS = ("valid/bleu", "train/loss", "valid/loss")


def read_curves(run: Path) -> dict[str, list[tuple[float, int, float]]]:
    """``{tag: [(minutes since the first event, step, value), ...]}`` for :data:`TAGS`.

    When a resumed run purged events (TensorBoard ``purge_step``), the accumulator keeps only the
    events written after the resume for the purged steps, so each step appears once.

    Raises:
        ValueError: no event file under ``run``, or no ``valid/bleu`` scalar in it.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = run / "tensorboard" if (run / "tensorboard").is_dir() else run
    if not list(logdir.glob("events.out.tfevents.*")):
        raise ValueError(f"{logdir}: no TensorBoard event file (events.out.tfevents.*)")
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    available = set(acc.Tags().get("scalars", []))
    if "valid/bleu" not in available:
        raise ValueError(f"{logdir}: no valid/bleu scalar (found: {sorted(available)[:8]})")
    events = {tag: acc.Scalars(tag) for tag in TAGS if tag in available}
    start = min(e.wall_time for series in events.values() for e in series)
    return {tag: [((e.wall_time - start) / 60.0, e.step, e.value) for e in series] for tag, series in events.items()}


def plot(curves: dict[str, dict], out: Path) -> None:
    """Two panels (dev BLEU; training and dev loss) against minutes, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bleu, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, series) in enumerate(curves.items()):
        colour = f"C{i}"
        t, _, v = zip(*series["valid/bleu"])
        ax_bleu.plot(t, v, marker="o", markersize=3, color=colour, label=label)
        if "train/loss" in series:
            t, _, v = zip(*series["train/loss"])
            ax_loss.plot(t, v, color=colour, alpha=0.6, label=f"{label} (train)")
        if "valid/loss" in series:
            t, _, v = zip(*series["valid/loss"])
            ax_loss.plot(t, v, color=colour, linestyle="--", marker="o", markersize=3, label=f"{label} (dev)")
    ax_bleu.set(xlabel="wall-clock minutes", ylabel="dev BLEU (sacreBLEU, cased)", title="dev BLEU")
    ax_loss.set(xlabel="wall-clock minutes", ylabel="label-smoothed loss per target token", title="loss")
    for ax in (ax_bleu, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (or TensorBoard log directories)")
    parser.add_argument("--labels", help="comma-separated legend labels, one per run (default: directory names)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(labels)} labels for {len(args.runs)} runs")
    curves = {}
    for label, run in zip(labels, args.runs):
        try:
            curves[label] = read_curves(run)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    plot(curves, args.out)
    for label, series in curves.items():
        t, step, bleu = max(series["valid/bleu"], key=lambda x: x[2])
        print(f"{label}: best dev BLEU {bleu:.2f} at step {step} ({t:.1f} min)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

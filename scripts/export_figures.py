#!/usr/bin/env python
"""Copy images logged to TensorBoard (e.g. the alignment figures) into PNG files.

    python scripts/export_figures.py RUN_DIR OUT_DIR [--tags attention/dev0/alignment ...] [--step N]

RUN_DIR is a training run (its ``tensorboard/`` folder is read) or a TensorBoard log directory.
Each tag whose name starts with one of ``--tags`` (default: every image tag) is written as
``OUT_DIR/<tag with / replaced by _>.png``, from the last logged step unless ``--step`` names one
(the latest step at or before it is used). Prints one JSON line per file written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_images(logdir: Path):
    """``EventAccumulator`` over ``logdir`` with every image kept (TensorBoard drops most by default)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    return acc


def export(logdir: Path, out_dir: Path, prefixes: list[str], step: int | None) -> list[dict]:
    """Write the selected images; returns one record (tag, step, path) per file.

    Raises:
        SystemExit: when the log directory has no matching image.
    """
    acc = load_images(logdir)
    tags = [t for t in acc.Tags()["images"] if not prefixes or any(t.startswith(p) for p in prefixes)]
    if not tags:
        raise SystemExit(f"error: no image tags matching {prefixes or 'anything'} in {logdir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for tag in sorted(tags):
        events = acc.Images(tag)
        if step is not None:
            events = [e for e in events if e.step <= step] or events[:1]
        event = max(events, key=lambda e: e.step)
        path = out_dir / (tag.replace("/", "_") + ".png")
        path.write_bytes(event.encoded_image_string)
        records.append({"tag": tag, "step": event.step, "path": str(path)})
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tags", nargs="*", default=[], help="tag prefixes to export (default: all images)")
    parser.add_argument("--step", type=int, default=None, help="export the images of this step (default: last)")
    args = parser.parse_args(argv)
    logdir = args.run_dir / "tensorboard" if (args.run_dir / "tensorboard").is_dir() else args.run_dir
    for record in export(logdir, args.out_dir, args.tags, args.step):
        sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

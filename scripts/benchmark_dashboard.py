#!/usr/bin/env python
"""What the Attention dashboard costs; prints one JSON object.

    python scripts/benchmark_dashboard.py --run runs/multi30k_transformer_en-de   # a finished training run
    python scripts/benchmark_dashboard.py --large                                  # 6+6 layers x 8 heads, 100 tokens

* ``run``: from a training run's own TensorBoard scalars: the seconds spent writing the
  dashboard's records at each validation (``attention/summary_seconds``: the teacher-forced
  pass over the probe sentences, the records, the write) against the run's training time, and
  the bytes they add per probe sentence per validation (``attention/summary_bytes``), with the
  event file's size for comparison. Issue 37's budget: under 1% of training time and under
  100 KB per probe sentence per validation.
* ``large``: the median seconds (of 5) and bytes of building and writing one record of a
  6+6-layer, 8-head model on a 100-token sentence pair (random weights; what a big model costs).

The page's own timings (first paint, every control change) are measured in the browser by
``tests/test_dashboard_browser.py`` (it prints them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_costs(run: Path) -> dict:
    """The dashboard's share of a finished run (see the module docstring)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = json.loads((run / "results.json").read_text())
    events = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    seconds, size, validations, records = [], [], 0, 0
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 1})
        acc.Reload()
        tags = acc.Tags()
        if "attention/summary_seconds" in tags["scalars"]:
            seconds += [e.value for e in acc.Scalars("attention/summary_seconds")]
            size += [e.value for e in acc.Scalars("attention/summary_bytes")]
        records += sum(1 for t in tags["tensors"] if t.endswith("/meta"))
    validations = len(seconds)
    per_record = sum(size) / max(1, records)
    train_seconds = results["train_minutes"] * 60
    return {"run": str(run), "validations": validations, "records": records,
            "sentences_per_validation": round(records / max(1, validations), 2),
            "summary_seconds_total": round(sum(seconds), 2), "summary_seconds_median": round(statistics.median(seconds), 4)
            if seconds else None, "train_seconds": round(train_seconds, 1),
            "summary_share_of_training": round(sum(seconds) / train_seconds, 5),
            "bytes_per_sentence_per_validation": round(per_record),
            "event_files_bytes": sum(p.stat().st_size for p in events)}


def large_record() -> dict:
    """Seconds and bytes of one 6+6-layer, 8-head, 100-token record (see the module docstring)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from nmt.attention_maps import AttentionMaps
    from nmt.tensorboard.writer import make_record, write_records

    pieces = [f"\u2581w{i}" for i in range(99)] + ["</s>"]
    rows = lambda: torch.softmax(torch.randn(8, 100, 100), -1)  # noqa: E731
    maps = AttentionMaps(pieces, pieces, cross=[rows() for _ in range(6)], decoder_self=[rows() for _ in range(6)],
                         encoder_self=[rows() for _ in range(6)], alignment_layer=5)
    times, size = [], 0
    with tempfile.TemporaryDirectory() as logdir, SummaryWriter(logdir) as writer:
        for step in range(5):
            start = time.perf_counter()
            size = write_records(writer, [make_record(maps, 0, step, "x", "y", "z")])
            times.append(time.perf_counter() - start)
    return {"layers": 6, "heads": 8, "tokens": 100, "seconds_median": round(statistics.median(times), 4),
            "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", default=[], help="a finished training run directory")
    parser.add_argument("--large", action="store_true", help="time one 6+6 x 8-head, 100-token record")
    args = parser.parse_args()
    out = {"runs": [run_costs(r) for r in args.run]}
    if args.large:
        out["large_record"] = large_record()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

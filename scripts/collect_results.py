#!/usr/bin/env python
"""Gather the ``results.json`` files of training runs (a Hydra multirun sweep, or run directories)
into one Markdown or CSV table.

Each run is labelled by its command-line overrides (``<run>/.hydra/overrides.yaml``, written by
Hydra); runs whose overrides differ only in ``seed=`` are one row, with mean ± sample standard
deviation over the seeds. Overrides shared by every run are printed once above the table instead
of in every row.

Usage::

    python scripts/collect_results.py multirun/rnn_ablation_a multirun/rnn_ablation_b
    python scripts/collect_results.py runs/ --csv > results.csv

Columns: updates, training minutes, target tokens/s (training wall time, validations included),
best dev BLEU, the length penalty chosen on dev, test BLEU (cased, lowercased) and chrF.

Exits with status 2 and a message naming the path if no ``results.json`` is found or one cannot
be parsed.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

COLUMNS = [  # (header, how to read it from results.json)
    ("updates", lambda r: r.get("steps")),
    ("minutes", lambda r: r.get("train_minutes")),
    ("tgt tok/s", lambda r: r.get("tgt_tokens_per_s")),
    ("dev BLEU", lambda r: r.get("best_valid_bleu")),
    ("length penalty", lambda r: (r.get("search") or {}).get("length_penalty")),
    ("test BLEU", lambda r: (r.get("test") or {}).get("bleu")),
    ("test BLEU lc", lambda r: (r.get("test") or {}).get("bleu_lc")),
    ("test chrF", lambda r: (r.get("test") or {}).get("chrf")),
]


def fail(message: str) -> None:
    """Print ``collect_results: message`` to stderr and exit with status 2."""
    print(f"collect_results: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_overrides(run_dir: Path) -> list[str]:
    """The overrides Hydra recorded for ``run_dir`` (one ``key=value`` per entry); ``[]`` if none."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("- "):
            items.append(line[2:].strip().strip("'\""))
    return items


def find_runs(paths: list[Path]) -> list[tuple[Path, dict, list[str]]]:
    """Every ``results.json`` under ``paths``, as ``(run_dir, results, overrides)`` sorted by path.

    Raises:
        SystemExit: a path does not exist, nothing is found, or a file is not valid JSON.
    """
    runs = []
    for root in paths:
        if not root.exists():
            fail(f"{root}: no such file or directory")
        files = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for f in files:
            try:
                results = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                fail(f"{f}: cannot read results: {e}")
            runs.append((f.parent, results, read_overrides(f.parent)))
    if not runs:
        fail(f"no results.json under {', '.join(map(str, paths))}")
    return runs


def summarise(values: list) -> str:
    """``mean ± std`` of the numbers in ``values`` (``mean`` alone for one, ``-`` for none)."""
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    if not nums:
        return "-"
    mean = statistics.fmean(nums)
    digits = 0 if all(float(v).is_integer() for v in nums) and mean >= 100 else 2
    text = f"{mean:.{digits}f}"
    if len(nums) > 1:
        text += f" ± {statistics.stdev(nums):.{digits}f}"
    return text


def build_table(runs: list[tuple[Path, dict, list[str]]]) -> tuple[list[str], list[list[str]]]:
    """Rows grouped by overrides without ``seed=``. Returns ``(common overrides, rows)``; each row
    is ``[label, seeds, *columns]``."""
    common = set.intersection(*(set(o) for _, _, o in runs)) if runs else set()
    groups: dict[str, list[dict]] = {}
    for run_dir, results, overrides in runs:
        own = [o for o in overrides if o not in common and not o.startswith("seed=")]
        label = " ".join(own) or (run_dir.name if len(runs) > 1 else "(all)")
        groups.setdefault(label, []).append(results)
    rows = []
    for label, group in groups.items():
        rows.append([label, str(len(group))] + [summarise([get(r) for r in group]) for _, get in COLUMNS])
    return sorted(o for o in common if not o.startswith("seed=")), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories (searched recursively)")
    parser.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    args = parser.parse_args(argv)
    common, rows = build_table(find_runs(args.paths))
    header = ["run", "seeds"] + [name for name, _ in COLUMNS]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(rows)
        return
    if common:
        print("Common overrides: " + " ".join(f"`{o}`" for o in common) + "\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join([f"`{row[0]}`"] + row[1:]) + " |")


if __name__ == "__main__":
    main()

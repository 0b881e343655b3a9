"""Make a large synthetic parallel corpus from Multi30k, for the scale benchmark.

    python scripts/make_scale_corpus.py 1000000 --out /tmp/scale-1m        # train.en/.de, valid, test2016
    nmt-train data.dir=/tmp/scale-1m ...

Each training pair joins ``--join`` Multi30k training pairs drawn at random with ``--seed`` (the
source sides joined by a space, the target sides likewise), so a pair has about 26 words a side
with the default of 2, the length of a WMT news sentence. The dev and test files are Multi30k's,
copied. The corpus is read from ``$NMT_DATA_DIR/multi30k`` (or ``--multi30k DIR``); nothing is
written outside ``--out``, and the files are written through temporary names and renamed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

SPLITS = ("valid", "test2016")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=int, help="training pairs to write")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--langs", nargs=2, default=["en", "de"], metavar=("SRC", "TGT"))
    parser.add_argument("--join", type=int, default=2, help="Multi30k pairs joined into one pair")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--multi30k", type=Path, default=None, help="default: $NMT_DATA_DIR/multi30k")
    return parser


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def write_corpus(pairs: int, out: Path, langs: list[str], join: int, seed: int, source: Path) -> None:
    """Write ``out/train.{src,tgt}`` (``pairs`` lines each) and copy the dev and test files.

    Raises:
        SystemExit: a missing Multi30k file or a bad argument (the message names it).
    """
    if pairs < 1 or join < 1:
        sys.exit("error: pairs and --join must be positive")
    sides = {}
    for lang in langs:
        path = source / f"train.{lang}"
        if not path.is_file():
            sys.exit(f"error: {path} not found (set NMT_DATA_DIR or --multi30k)")
        sides[lang] = np.array(_lines(path), dtype=object)
    n = len(sides[langs[0]])
    if len(sides[langs[1]]) != n:
        sys.exit(f"error: {source}: train.{langs[0]} and train.{langs[1]} differ in line count")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = {lang: out / f".train.{lang}.{os.getpid()}.tmp" for lang in langs}
    files = {lang: open(tmp[lang], "w", encoding="utf-8", newline="\n") for lang in langs}
    try:
        for start in range(0, pairs, 100_000):
            picks = rng.integers(0, n, size=(min(100_000, pairs - start), join))
            for lang in langs:
                rows = sides[lang][picks]
                files[lang].write("".join(" ".join(row) + "\n" for row in rows))
    finally:
        for f in files.values():
            f.close()
    for lang in langs:
        os.replace(tmp[lang], out / f"train.{lang}")
        for split in SPLITS:
            shutil.copyfile(source / f"{split}.{lang}", out / f"{split}.{lang}")


def main() -> None:
    args = build_parser().parse_args()
    source = args.multi30k or Path(os.environ.get("NMT_DATA_DIR", "data")) / "multi30k"
    write_corpus(args.pairs, args.out, args.langs, args.join, args.seed, source)
    print(f"wrote {args.pairs} pairs to {args.out}")


if __name__ == "__main__":
    main()

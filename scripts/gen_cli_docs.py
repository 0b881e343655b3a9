"""Write docs/cli.md from the option dataclasses (nmt.cli.reference); ``--check`` exits 1 when it is stale."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.cli.reference import reference_markdown
from nmt.cli.train import conf_dir

TARGET = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = reference_markdown(conf_dir())
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

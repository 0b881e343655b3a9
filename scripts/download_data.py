#!/usr/bin/env python
"""Download a known corpus: ``python scripts/download_data.py multi30k [--dest DIR] [--langs en de]``.

Works from a plain checkout (no install): the repository root is put on ``sys.path``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmt.data.download import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""Thin command-line entry points."""
import logging
import sys


def setup_logging(logfile=None) -> None:
    """Plain log lines on stderr (and appended to ``logfile`` when given)."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if logfile is not None:
        handlers.append(logging.FileHandler(logfile, mode="a", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)

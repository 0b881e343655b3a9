"""Thin command-line entry points."""
import logging
import sys
from typing import Any, Optional


def setup_logging(logfile=None) -> None:
    """Plain log lines on stderr (and appended to ``logfile`` when given)."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if logfile is not None:
        handlers.append(logging.FileHandler(logfile, mode="a", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def comma_list(value: Optional[str]) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (list-valued options such as ``ckpt=A,B``); [] for None or ""."""
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def parse_options(schema: type, doc: str, argv: list[str], parse: Optional[list[str]] = None) -> Optional[Any]:
    """The shared start of every ``key=value`` console script.

    Prints ``doc`` and the option names and returns None for ``-h``/``--help`` (the package and
    dependency versions for ``--version``); otherwise sets up
    logging, applies a ``num_threads`` option (> 0) to torch, and returns ``schema`` parsed from ``parse`` (default: ``argv``).

    Raises:
        SystemExit: an unknown key or a value of the wrong type (see :func:`nmt.config.parse_cli`).
    """
    from nmt.config import parse_cli

    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip() + "\n\noptions: " + ", ".join(schema.__dataclass_fields__))
        return None
    if "--version" in argv:
        from nmt.versions import format_versions

        print(format_versions())
        return None
    setup_logging()
    cfg = parse_cli(schema, argv if parse is None else parse)
    if getattr(cfg, "num_threads", 0) > 0:  # every CLI's num_threads option: torch intra-op threads
        import torch

        torch.set_num_threads(cfg.num_threads)
    return cfg

"""Thin command-line entry points."""
import functools
import logging
import os
import sys
from typing import Any, Callable, Optional


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

    Prints ``doc`` and every option (type, default, its field comment; the same as ``docs/cli.md``)
    and returns None for ``-h``/``--help`` (the package and
    dependency versions for ``--version``); otherwise sets up
    logging, applies a ``num_threads`` option (> 0) to torch, and returns ``schema`` parsed from ``parse`` (default: ``argv``).

    Raises:
        SystemExit: an unknown key, a value of the wrong type (see :func:`nmt.config.parse_cli`)
            or out of range (:func:`nmt.config_checks.check_options`).
    """
    from nmt.config import parse_cli

    if any(a in ("-h", "--help") for a in argv):
        from nmt.field_docs import help_text

        print(help_text(schema, doc))
        return None
    if "--version" in argv:
        from nmt.versions import format_versions

        print(format_versions())
        return None
    from nmt.config import ConfigError
    from nmt.config_checks import check_options

    setup_logging()
    cfg = parse_cli(schema, argv if parse is None else parse)
    try:
        check_options(cfg)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    if getattr(cfg, "num_threads", 0) > 0:  # every CLI's num_threads option: torch intra-op threads
        import torch

        torch.set_num_threads(cfg.num_threads)
    return cfg


def one_error_line(main: Callable) -> Callable:
    """Wrap a console script's ``main`` so that any failure ends in one ``error:`` line on stderr
    and exit status 1, not a traceback (``NMT_TRACEBACK=1`` shows the traceback instead)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as err:  # SystemExit and KeyboardInterrupt are not Exceptions: they pass
            if os.environ.get("NMT_TRACEBACK"):
                raise
            text = (str(err).strip().splitlines() or [""])[0]
            sys.stderr.write(f"error: {type(err).__name__}: {text} (NMT_TRACEBACK=1 shows where)\n")
            raise SystemExit(1) from None

    return wrapper

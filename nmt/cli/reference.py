"""``docs/cli.md``: every console script's options, generated from the same dataclasses and
field comments that its ``--help`` prints (:mod:`nmt.field_docs`), so the two cannot drift.

Regenerate with ``python scripts/gen_cli_docs.py``; a test fails when the file is stale.
"""
from __future__ import annotations

import ast
import contextlib
import os
from pathlib import Path

from nmt.cli.options import AlignConfig, AverageConfig, EvaluateConfig, ExportConfig, TranslateConfig
from nmt.config import Config
from nmt.field_docs import markdown_table

CLI_DIR = Path(__file__).resolve().parent
#: (command, module file whose docstring describes it, options schema)
COMMANDS = [("nmt-translate", "translate.py", TranslateConfig), ("nmt-evaluate", "evaluate.py", EvaluateConfig),
            ("nmt-align", "align.py", AlignConfig), ("nmt-average", "average.py", AverageConfig),
            ("nmt-export", "export.py", ExportConfig)]


def module_doc(filename: str) -> str:
    """The docstring of ``nmt/cli/<filename>``, read without importing it."""
    return ast.get_docstring(ast.parse((CLI_DIR / filename).read_text(encoding="utf-8"))) or ""


def config_groups(conf_dir: str | Path) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` of a Hydra config directory (``data: [hf, multi30k, ...]``)."""
    conf = Path(conf_dir)
    return {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in sorted(conf.iterdir())
            if d.is_dir() and any(d.glob("*.yaml"))}


def _markdown(doc: str) -> str:
    """A docstring as Markdown: runs of lines indented by two spaces become a code block."""
    out, code = [], False
    for line in doc.splitlines():
        indented = line.startswith("  ") and line.strip()
        if indented and not code:
            out.append("```text")
            code = True
        elif not indented and code and line.strip():
            out.append("```")
            code = False
        out.append(line[2:] if code and line.startswith("  ") else line)
    if code:
        out.append("```")
    return "\n".join(out).replace("\n```\n\n```text\n", "\n\n")


def train_help_doc(conf_dir: str | Path) -> str:
    """The description ``nmt-train --help`` prints above its options."""
    train_doc = module_doc("train.py")
    groups = "\n".join(f"  {group}={' | '.join(names)}" for group, names in config_groups(conf_dir).items())
    return (f"{train_doc.strip()}\n\nConfig groups (group=option on the command line; conf/):\n{groups}\n\n"
            "Any option below is set as key=value (train.max_tokens=8192). `nmt-train --cfg job` prints the "
            "composed config; `nmt-train --hydra-help` shows Hydra's own options.")


def _argparse_help(parser) -> str:
    with _columns(100):
        return parser.format_help()


@contextlib.contextmanager
def _columns(width: int):
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def reference_markdown(conf_dir: str | Path) -> str:
    """The whole of ``docs/cli.md``."""
    from nmt.data.download import build_parser

    parts = ["# Command-line reference", "",
             "Generated from the option dataclasses and their field comments (`python scripts/gen_cli_docs.py`); "
             "each command's `--help` prints the same. Options are `key=value`; nested ones are dotted.", "",
             "## nmt-train", "", _markdown(train_help_doc(conf_dir)), "", markdown_table(Config), ""]
    for command, filename, schema in COMMANDS:
        parts += [f"## {command}", "", _markdown(module_doc(filename)), "", markdown_table(schema), ""]
    parts += ["## nmt-data", "", "```text", _argparse_help(build_parser()).rstrip(), "```", ""]
    return "\n".join(parts)

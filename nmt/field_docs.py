"""Option references generated from the config dataclasses, so that a console script's ``--help``
and ``docs/cli.md`` say the same thing as the code.

A field's documentation is the comment on its own line in the class body
(``beam_size: Optional[int] = None  # default: the checkpoint's search config``); nested
dataclasses become dotted keys (``attention.logdir``), as they are written on the command line.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any, NamedTuple


class Option(NamedTuple):
    """One ``key=value`` setting: its dotted key, type, default and documentation."""

    key: str
    type: str
    default: str
    doc: str


def field_docs(schema: type) -> dict[str, str]:
    """``{field name: the comment on its line}`` for a dataclass defined in a source file ('' when
    a field has none)."""
    source = textwrap.dedent(inspect.getsource(schema))
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    return {node.target.id: comments.get(node.end_lineno, "") for node in body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(str(m.value) for m in tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin is typing.Union and len(args) == 1:
        return _type_name(args[0])
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or value == "???":  # omegaconf's MISSING
        return "(required)" if value == "???" else "—"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def options(schema: type, prefix: str = "") -> list[Option]:
    """Every setting of dataclass ``schema`` in definition order, nested groups flattened."""
    hints = typing.get_type_hints(schema)
    docs = field_docs(schema)
    out = []
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += options(tp, f"{prefix}{f.name}.")
        else:
            out.append(Option(prefix + f.name, _type_name(tp), _default(f), docs.get(f.name, "")))
    return out


def help_text(schema: type, doc: str, width: int = 100) -> str:
    """``--help``: the command's docstring, then one entry per option (key, type, default, doc)."""
    lines = [doc.strip(), "", "options (key=value):"]
    for opt in options(schema):
        lines.append(f"  {opt.key}: {opt.type} = {opt.default}")
        if opt.doc:
            lines += textwrap.wrap(opt.doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def markdown_table(schema: type, prefix: str = "") -> str:
    """The options of ``schema`` as a Markdown table (for ``docs/cli.md``)."""
    rows = ["| option | type | default | description |", "|---|---|---|---|"]
    for opt in options(schema, prefix):
        cells = [f"`{opt.key}`", opt.type.replace("|", "\\|"), f"`{opt.default}`", opt.doc.replace("|", "\\|")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)

"""``nmt-translate ckpt=DIR [key=value ...] [SENTENCE ...]``: translate sentences.

``ckpt=DIR1,DIR2,...`` decodes with an ensemble of the checkpoints (the mean of their
next-token probabilities, as fairseq); they must share one sentencepiece model.
``nmt-translate engine=ctranslate2 model=DIR ...`` translates with a model exported by
``nmt-export`` (CTranslate2, C++; beam search and n-best, no alignments).

Sentences come from the arguments (words without ``=``, or everything after ``--``), from
``input=FILE``, or from stdin, one per line; exactly one output entry per input line in input
order. Input is read ``chunk_size`` lines at a time (default 1000) and each chunk's output is
written and flushed before the next chunk is read, so memory is bounded by a chunk and a
pipeline sees results as they come; ``output=FILE`` is written atomically when all is done.
A progress bar (lines translated) appears on stderr when stderr is a terminal
(``progress=auto|true|false``). Needs only the checkpoint, and imports neither Hydra,
datasets, TensorBoard nor matplotlib unless figures are asked for.

Formats (``format=``; ``id`` = 0-based input line): ``plain`` (the translation; with
``nbest>1`` Moses blocks ``id ||| text ||| score``), ``score`` (``score<TAB>text``, or the same
blocks; ``scores=true`` is an alias), ``tsv`` (``id<TAB>rank<TAB>score<TAB>text`` per hypothesis,
rank 1 = best) and ``jsonl`` (``{"id", "src", "hyps": [{"text", "score", "alignment"}]}`` per
input line; ``alignment`` is filled with ``print_alignment=true``, else null).

Interactive mode: when stdin is a terminal and neither sentences, ``input`` nor ``output`` are
given, a ``> `` prompt translates each line as it is typed, prints the n-best list with scores
and draws the best hypothesis's attention as a character heatmap; ``:beam 5``, ``:nbest 3``,
``:lp 1.0``, ``:align on|off``, ``:help``, ``:quit`` (or Ctrl-D).

Alignments: ``print_alignment=true`` appends a tab and the hard word alignment in Pharaoh
format (``i-j``: source word i, target word j, 0-based, words = whitespace tokens) to each
output line (tsv: a fifth column; n-best blocks: a fourth ``|||`` field);
``attention.logdir=DIR`` (TensorBoard's Attention tab: ``tensorboard --logdir DIR``; with
``attention.images=true`` also figures in its Images tab), ``attention.png_dir=DIR`` (PNG files)
and ``attention.ascii=true`` (character heatmaps on stderr) show the attention of the
translations the search produced, every layer and head (for an ensemble: each member's).
"""
from __future__ import annotations

import itertools
import logging
import re
import sys
from typing import Optional

from nmt.cli import one_error_line

log = logging.getLogger("nmt.translate")


_OPTION = re.compile(r"^[+~]{0,2}[A-Za-z_][A-Za-z0-9_.]*=\S*$")


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """``key=value`` options and positional sentences, keeping the order of the sentences.

    An argument is an option when it looks like a Hydra override (``beam_size=5``,
    ``attention.png_dir=figs``: a dotted name, ``=``, no spaces); everything else, and every
    argument after ``--``, is a sentence (``nmt-translate ckpt=R -- "x=1 is a formula"``).
    """
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    opts = [a for a in argv if _OPTION.match(a)]
    return opts, [a for a in argv if not _OPTION.match(a)]


def read_input(path: Optional[str], sentences: list[str]) -> list[str]:
    """All input lines at once (see :func:`nmt.cli.translate_io.read_chunks` for the rules).

    Raises:
        SystemExit: no input at all, or ``path`` cannot be read.
    """
    from nmt.cli.translate_io import read_chunks

    return [line for chunk in read_chunks(path, sentences, chunk_size=4096) for line in chunk]


def output_format(cfg) -> str:
    """``cfg.format``, with ``scores=true`` as an alias of ``format=score``.

    Raises:
        SystemExit: an unknown format, or ``scores=true`` with tsv/jsonl.
    """
    from nmt.cli.translate_io import FORMATS

    fmt = cfg.format
    if fmt not in FORMATS:
        raise SystemExit(f"error: format={fmt!r}; expected one of {', '.join(FORMATS)}")
    if cfg.scores:
        if fmt not in ("plain", "score"):
            raise SystemExit(f"error: scores=true is format=score; it cannot be combined with format={fmt}")
        fmt = "score"
    return fmt


@one_error_line
def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-translate``."""
    from nmt.cli import parse_options
    from nmt.cli.options import TranslateConfig

    argv = sys.argv[1:] if argv is None else argv
    opts, sentences = split_argv(argv)
    cfg: Optional[TranslateConfig] = parse_options(TranslateConfig, __doc__, argv, parse=opts)
    if cfg is None:
        return
    fmt = output_format(cfg)
    if cfg.nbest < 1:
        raise SystemExit(f"error: nbest must be at least 1, got {cfg.nbest}")
    if not sentences and not cfg.input and not cfg.output and sys.stdin.isatty():
        from nmt.cli.interactive import run_interactive
        from nmt.cli.translate_engines import build_engine

        engine = build_engine(cfg)
        run_interactive(engine, engine.defaults, sys.stdin, sys.stdout)
        return
    translate_stream(cfg, sentences, fmt)


def translate_stream(cfg, sentences: list[str], fmt: str, stdin=None, stdout=None) -> int:
    """Translate the input chunk by chunk, writing and flushing each chunk's output before the
    next chunk is read; returns the number of input lines.

    Args:
        stdin, stdout: binary input and text output streams (default: the process's).
    Raises:
        SystemExit: no input, unreadable input, unwritable output, or engine errors.
    """
    from nmt.cli.translate_engines import build_engine
    from nmt.cli.translate_io import OutputWriter, format_chunk, progress_bar, read_chunks

    chunks = read_chunks(cfg.input, sentences, cfg.chunk_size, stream=stdin)
    first = next(chunks)  # "no input" before the model is loaded
    engine = build_engine(cfg)
    figures = bool(cfg.attention.logdir or cfg.attention.png_dir or cfg.attention.ascii)
    bar = progress_bar(cfg.progress)
    writer = OutputWriter(cfg.output, stream=stdout)
    done, ok = 0, False
    try:
        for lines in itertools.chain([first], chunks):
            for n, line in enumerate(lines, done + 1):
                if not line:
                    log.warning("input line %d is empty; its output line is empty", n)
            decoded = engine.translate(lines, engine.defaults, first_line=done + 1)
            writer.write(format_chunk(done, lines, decoded.translations, fmt, engine.defaults.nbest))
            if figures:
                engine.write_figures(decoded, first_line=done + 1)
            done += len(lines)
            if bar is not None:
                bar.update(len(lines))
        ok = True
    finally:
        if bar is not None:
            bar.close()
        writer.close(ok)
    return done


if __name__ == "__main__":
    main()

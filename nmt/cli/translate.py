"""``nmt-translate ckpt=DIR [key=value ...] [SENTENCE ...]``: translate sentences.

Sentences come from the arguments (words without ``=``, or everything after ``--``), from
``input=FILE``, or from stdin, one per line; exactly one output line per input line in input
order (an n-best block with ``nbest>1``). Needs only the checkpoint, and imports neither
Hydra, datasets, TensorBoard nor matplotlib.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

log = logging.getLogger("nmt.translate")


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """``key=value`` options and positional sentences (all words after ``--`` are sentences)."""
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    opts = [a for a in argv if "=" in a.split(" ")[0] and not a.startswith("-")]
    return opts, [a for a in argv if a not in opts]


def read_input(path: Optional[str], sentences: list[str]) -> list[str]:
    """The lines to translate (R19: split on ``\\n`` only, so counts match ``wc -l``).

    Raises:
        SystemExit: invalid UTF-8 (with line and byte offset) or no input at all.
    """
    if sentences:
        return sentences
    raw = open(path, "rb").read() if path else sys.stdin.buffer.read()
    where = path or "<stdin>"
    if not raw:
        raise SystemExit(f"error: no input in {where}: give sentences as arguments, input=FILE, or lines on stdin")
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8").rstrip("\r").strip())
        except UnicodeDecodeError as err:
            raise SystemExit(f"error: {where} line {n}: invalid UTF-8 at byte {err.start}") from None
    return out


def format_output(hyps_per_line, tokenizer, nbest: int, scores: bool) -> list[str]:
    """One line per input (``score<TAB>text`` with scores), or Moses-style n-best blocks
    ``index ||| text ||| score``."""
    out = []
    for i, hyps in enumerate(hyps_per_line):
        texts = tokenizer.decode_tgt([h.tokens for h in hyps])
        if nbest > 1:
            out += [f"{i} ||| {t} ||| {h.score:.4f}" for t, h in zip(texts, hyps)]
        elif scores:
            out.append(f"{hyps[0].score:.4f}\t{texts[0]}")
        else:
            out.append(texts[0])
    return out


def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-translate``."""
    from nmt.cli import setup_logging
    from nmt.config import TranslateConfig, parse_cli

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\noptions: " + ", ".join(TranslateConfig.__dataclass_fields__))
        return
    setup_logging()
    opts, sentences = split_argv(argv)
    cfg: TranslateConfig = parse_cli(TranslateConfig, opts)
    lines = read_input(cfg.input, sentences)

    import torch

    from nmt.evaluate import translate_texts
    from nmt.io import atomic_write_text
    from nmt.train.checkpoint import CheckpointError, load_model

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    try:
        loaded = load_model(cfg.ckpt, device=cfg.device)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    sc = loaded.config.search
    beam = cfg.beam_size or sc.beam_size
    for n, line in enumerate(lines, 1):
        if not line:
            log.warning("input line %d is empty; its output line is empty", n)
    hyps = translate_texts(loaded.model, loaded.tokenizer, lines, beam_size=max(beam, cfg.nbest),
                           length_penalty=sc.length_penalty if cfg.length_penalty is None else cfg.length_penalty,
                           max_len_a=sc.max_len_a, max_len_b=sc.max_len_b, nbest=cfg.nbest,
                           batch_size=cfg.batch_size, max_src_len=loaded.config.model.max_positions - 1,
                           device=cfg.device)
    out = format_output(hyps, loaded.tokenizer, cfg.nbest, cfg.scores)
    text = "".join(line + "\n" for line in out)
    if cfg.output:
        atomic_write_text(cfg.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

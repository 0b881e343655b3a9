"""``nmt-translate ckpt=DIR [key=value ...] [SENTENCE ...]``: translate sentences.

``nmt-translate engine=ctranslate2 model=DIR ...`` translates with a model exported by
``nmt-export`` (CTranslate2, C++; beam search and n-best, no alignments).

Sentences come from the arguments (words without ``=``, or everything after ``--``), from
``input=FILE``, or from stdin, one per line; exactly one output line per input line in input
order (an n-best block with ``nbest>1``). Needs only the checkpoint, and imports neither
Hydra, datasets, TensorBoard nor matplotlib unless figures are asked for.

Alignments: ``print_alignment=true`` appends a tab and the hard word alignment in Pharaoh
format (``i-j``: source word i, target word j, 0-based, words = whitespace tokens) to each
output line; ``attention.logdir=DIR`` (TensorBoard), ``attention.png_dir=DIR`` (PNG files)
and ``attention.ascii=true`` (character heatmaps on stderr) show the attention of the
translations the search produced, every layer and head.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Optional

log = logging.getLogger("nmt.translate")


_OPTION = re.compile(r"^[+~]{0,2}[A-Za-z_][A-Za-z0-9_.]*=\S*$")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f]")  # C0 controls except tab, as in nmt.data.corpus (R26)


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
    """The lines to translate, one per input line (R19: split on ``\\n`` only, so counts match
    ``wc -l``; R25, R26: a line that is not valid UTF-8 becomes an empty line and control
    characters such as NUL become spaces, each with a warning naming the line, so the output
    keeps one line per input line).

    Raises:
        SystemExit: no input at all, or ``path`` cannot be read.
    """
    if sentences:
        return [_clean(s, "<arguments>", n) for n, s in enumerate(sentences, 1)]
    where = path or "<stdin>"
    try:
        raw = open(path, "rb").read() if path else sys.stdin.buffer.read()
    except OSError as err:
        raise SystemExit(f"error: cannot read {where}: {err.strerror or err}") from None
    if not raw:
        raise SystemExit(f"error: no input in {where}: give sentences as arguments, input=FILE, or lines on stdin")
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            log.warning("%s line %d: invalid UTF-8 at byte %d; its output line is empty", where, n, err.start)
            text = ""
        out.append(_clean(text.rstrip("\r"), where, n))
    return out


def _clean(text: str, where: str, n: int) -> str:
    if _CONTROL.search(text):
        log.warning("%s line %d: control characters (NUL, ...) replaced by spaces", where, n)
        text = _CONTROL.sub(" ", text)
    return text.strip()


def format_output(hyps_per_line, tokenizer, nbest: int, scores: bool,
                  alignments: Optional[list[list[str]]] = None) -> list[str]:
    """One line per input (``score<TAB>text`` with scores), or Moses-style n-best blocks
    ``index ||| text ||| score``; with ``alignments`` (Pharaoh strings per hypothesis) a tab
    and the links follow the text (n-best: a fourth ``|||`` field)."""
    out = []
    for i, hyps in enumerate(hyps_per_line):
        texts = tokenizer.decode_tgt([h.tokens for h in hyps])
        links = alignments[i] if alignments is not None else None
        if nbest > 1:
            out += [f"{i} ||| {t} ||| {h.score:.4f}" + (f" ||| {links[k]}" if links is not None else "")
                    for k, (t, h) in enumerate(zip(texts, hyps))]
            continue
        line = f"{hyps[0].score:.4f}\t{texts[0]}" if scores else texts[0]
        out.append(line + (f"\t{links[0]}" if links is not None else ""))
    return out


def pharaoh_links(hyps_per_line, src_ids, tokenizer, shift: bool) -> list[list[str]]:
    """Pharaoh word links of every hypothesis from the alignment the search carried."""
    from nmt.alignment import format_pharaoh
    from nmt.attention_maps import EOS_PIECE, word_alignment

    out = []
    for hyps, src in zip(hyps_per_line, src_ids):
        links = []
        for h in hyps:
            if h.alignment is None:  # empty input
                links.append("")
                continue
            src_pieces = tokenizer.src_pieces(src[: h.alignment.size(1) - 1]) + [EOS_PIECE]
            tgt_pieces = tokenizer.tgt_pieces(h.tokens) + [EOS_PIECE]
            links.append(format_pharaoh(word_alignment(h.alignment, tgt_pieces, src_pieces, shift=shift)))
        out.append(links)
    return out


def write_figures(cfg, model, tokenizer, src_ids, hyps_per_line, max_src_len: int) -> None:
    """The figures asked for by ``attention.*`` for every non-empty input line."""
    from nmt.attention_maps import collect_attention
    from nmt.viz import write_attention

    ac = cfg.attention
    rows = [i for i, s in enumerate(src_ids) if s]
    maps = collect_attention(model, tokenizer, [src_ids[i][:max_src_len] for i in rows],
                             [hyps_per_line[i][0].tokens for i in rows], batch_size=cfg.batch_size)
    n = write_attention(maps, [f"sentence{i + 1}" for i in rows], logdir=ac.logdir, png_dir=ac.png_dir,
                        ascii_stream=sys.stderr if ac.ascii else None, words=ac.words, all_layers=ac.all_layers)
    if n:
        log.info("wrote %d attention figures to %s", n, " and ".join(p for p in (ac.logdir, ac.png_dir) if p))


def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-translate``."""
    from nmt.cli import parse_options
    from nmt.config import TranslateConfig

    argv = sys.argv[1:] if argv is None else argv
    opts, sentences = split_argv(argv)
    cfg: Optional[TranslateConfig] = parse_options(TranslateConfig, __doc__, argv, parse=opts)
    if cfg is None:
        return
    lines = read_input(cfg.input, sentences)
    for n, line in enumerate(lines, 1):
        if not line:
            log.warning("input line %d is empty; its output line is empty", n)
    if cfg.engine == "ctranslate2":
        out = translate_ctranslate2(cfg, lines)
    elif cfg.engine == "torch":
        out = translate_torch(cfg, lines)
    else:
        raise SystemExit(f"error: unknown engine={cfg.engine!r}; expected torch or ctranslate2")
    text = "".join(line + "\n" for line in out)
    if cfg.output:
        from nmt.io import atomic_write_text

        atomic_write_text(cfg.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def translate_ctranslate2(cfg, lines: list[str]) -> list[str]:
    """Output lines from an exported CTranslate2 model (``model=DIR``); no alignments or figures."""
    from nmt.export.ctranslate2 import CT2Translator, ExportError

    if not cfg.model:
        raise SystemExit("error: engine=ctranslate2 needs model=DIR (a directory written by nmt-export)")
    if cfg.print_alignment or cfg.attention.logdir or cfg.attention.png_dir or cfg.attention.ascii:
        raise SystemExit("error: alignments and attention figures need engine=torch and ckpt=...")
    try:
        tr = CT2Translator(cfg.model, device=cfg.device, compute_type=cfg.compute_type,
                           intra_threads=max(cfg.num_threads, 0))
    except (ExportError, RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    results = tr.translate(lines, beam_size=cfg.beam_size, length_penalty=cfg.length_penalty, nbest=cfg.nbest,
                           batch_size=cfg.batch_size)
    out = []
    for i, hyps in enumerate(results):
        if cfg.nbest > 1:
            out += [f"{i} ||| {t} ||| {s:.4f}" for t, s in hyps]
        else:
            out.append(f"{hyps[0][1]:.4f}\t{hyps[0][0]}" if cfg.scores else hyps[0][0])
    return out


def translate_torch(cfg, lines: list[str]) -> list[str]:
    """Output lines from a checkpoint with our batched beam search (``ckpt=DIR``)."""
    if not cfg.ckpt:
        raise SystemExit("error: give ckpt=DIR (a checkpoint or run directory), or engine=ctranslate2 model=DIR")
    import torch

    from nmt.evaluate import translate_ids
    from nmt.train.checkpoint import CheckpointError, load_model

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    try:
        loaded = load_model(cfg.ckpt, device=cfg.device)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    sc = loaded.config.search
    beam = cfg.beam_size or sc.beam_size
    src_ids = loaded.tokenizer.encode_src(lines)
    max_src_len = loaded.config.model.max_positions - 1
    hyps = translate_ids(loaded.model, src_ids, beam_size=max(beam, cfg.nbest),
                         length_penalty=sc.length_penalty if cfg.length_penalty is None else cfg.length_penalty,
                         max_len_a=sc.max_len_a, max_len_b=sc.max_len_b, nbest=cfg.nbest,
                         batch_size=cfg.batch_size, max_src_len=max_src_len, need_attn=cfg.print_alignment,
                         device=cfg.device)
    links = pharaoh_links(hyps, src_ids, loaded.tokenizer, cfg.alignment_shift) if cfg.print_alignment else None
    out = format_output(hyps, loaded.tokenizer, cfg.nbest, cfg.scores, links)
    if cfg.attention.logdir or cfg.attention.png_dir or cfg.attention.ascii:
        write_figures(cfg, loaded.model, loaded.tokenizer, src_ids, hyps, max_src_len)
    return out


if __name__ == "__main__":
    main()

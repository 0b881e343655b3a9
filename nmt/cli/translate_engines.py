"""The two ``nmt-translate`` engines behind one interface: our checkpoints (one model or an
ensemble) with our beam search, and a CTranslate2 export.

Both turn a chunk of cleaned input lines into per-line :class:`~nmt.cli.translate_io.Translated`
hypotheses, best first, so that one formatter serves both (``format=plain|score|tsv|jsonl``).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from nmt.cli import comma_list
from nmt.cli.translate_io import Translated

log = logging.getLogger("nmt.translate")


@dataclass
class DecodeSettings:
    """What a user may change between sentences (``:beam``, ``:nbest``, ``:lp``, ``:align``).

    Attributes:
        beam_size: K (the search uses ``max(beam_size, nbest)``).
        nbest: hypotheses per input line.
        length_penalty: GNMT alpha (Wu et al. 2016 eq. 14); None = the model's default.
        alignment: compute Pharaoh word links (and the attention the heatmaps show).
    """

    beam_size: int
    nbest: int = 1
    length_penalty: Optional[float] = None
    alignment: bool = False


@dataclass
class Decoded:
    """One chunk's result: ``translations`` per line; for the torch engine also the search's
    :class:`~nmt.search.Hypothesis` lists and the source ids (for heatmaps and figures)."""

    translations: list[list[Translated]]
    hypotheses: Optional[list] = None
    src_ids: Optional[list[list[int]]] = None
    sources: Optional[list[str]] = None


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


class TorchEngine:
    """Checkpoint(s) from ``ckpt=A[,B,...]`` decoded with :func:`nmt.search.search`; several
    checkpoints decode as an :class:`~nmt.models.ensemble.Ensemble` (mean of probabilities).

    Raises:
        SystemExit: no ``ckpt``, or a checkpoint that cannot be loaded / members that differ.
    """

    supports_alignment = True

    def __init__(self, cfg) -> None:
        if not cfg.ckpt:
            raise SystemExit("error: give ckpt=DIR (a checkpoint or run directory; DIR1,DIR2 for an ensemble), "
                             "or engine=ctranslate2 model=DIR")
        from nmt.checkpoint import load_ensemble
        from nmt.checkpoint import CheckpointError

        paths = comma_list(cfg.ckpt)
        try:
            self.loaded = load_ensemble(paths, device=cfg.device)
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
        if len(paths) > 1:
            log.info("ensemble of %d checkpoints: %s", len(paths), ", ".join(self.loaded.meta["ensemble"]))
        self.cfg = cfg
        self.search = self.loaded.config.search
        self.defaults = DecodeSettings(beam_size=cfg.beam_size or self.search.beam_size, nbest=cfg.nbest,
                                       length_penalty=cfg.length_penalty, alignment=cfg.print_alignment)

    def translate(self, lines: Sequence[str], settings: DecodeSettings, first_line: int = 1) -> Decoded:
        """Translate ``lines`` (input lines ``first_line ..``, 1-based, for warnings)."""
        from nmt.evaluate import source_limit, translate_ids, truncate_sources

        tok = self.loaded.tokenizer
        src_ids = truncate_sources(tok.encode_src(list(lines)), source_limit(self.loaded.model), first_line)
        alpha = self.search.length_penalty if settings.length_penalty is None else settings.length_penalty
        hyps = translate_ids(self.loaded.model, src_ids, beam_size=max(settings.beam_size, settings.nbest),
                             length_penalty=alpha, max_len_a=self.search.max_len_a, max_len_b=self.search.max_len_b,
                             nbest=settings.nbest, batch_size=self.cfg.batch_size, need_attn=settings.alignment,
                             device=self.cfg.device)
        links = pharaoh_links(hyps, src_ids, tok, self.cfg.alignment_shift) if settings.alignment else None
        out = []
        for i, hs in enumerate(hyps):
            texts = tok.decode_tgt([h.tokens for h in hs])
            out.append([Translated(t, h.score, links[i][k] if links else None)
                        for k, (t, h) in enumerate(zip(texts, hs))])
        return Decoded(out, hyps, src_ids, list(lines))

    def heatmap(self, decoded: Decoded, line: int) -> Optional[str]:
        """Character heatmap (words) of the best hypothesis of ``line`` (chunk index), or None
        without attention (alignment off, or an empty input)."""
        from nmt.alignment import merge_subwords
        from nmt.attention_maps import EOS_PIECE
        from nmt.viz import ascii_heatmap

        hyp, src = decoded.hypotheses[line][0], decoded.src_ids[line]
        if hyp.alignment is None:
            return None
        tok = self.loaded.tokenizer
        src_pieces = tok.src_pieces(src[: hyp.alignment.size(1) - 1]) + [EOS_PIECE]
        tgt_pieces = tok.tgt_pieces(hyp.tokens) + [EOS_PIECE]
        matrix, tgt_words, src_words = merge_subwords(hyp.alignment, tgt_pieces, src_pieces)
        return ascii_heatmap(matrix, src_words, tgt_words)

    def write_figures(self, decoded: Decoded, first_line: int) -> None:
        """What ``attention.*`` asks for, for every non-empty line of the chunk: the Attention
        dashboard's records in ``attention.logdir`` (sentence = input line - 1, step 0), figures
        (``attention.images`` into the logdir, ``attention.png_dir``, named ``sentence<N>``) and
        character heatmaps. An ensemble writes each member's attention over the ensemble's
        translation (``<logdir>/model<k>``, ``model<k>/sentence<N>``)."""
        from nmt.attention_maps import collect_attention
        from nmt.models.ensemble import Ensemble
        from nmt.viz import write_attention

        ac = self.cfg.attention
        rows = [i for i, s in enumerate(decoded.src_ids) if s]
        model = self.loaded.model
        members = list(model.models) if isinstance(model, Ensemble) else [model]
        n = 0
        for k, member in enumerate(members):
            prefix = f"model{k}/" if len(members) > 1 else ""
            maps = collect_attention(member, self.loaded.tokenizer, [decoded.src_ids[i] for i in rows],
                                     [decoded.hypotheses[i][0].tokens for i in rows], batch_size=self.cfg.batch_size)
            if ac.logdir:
                self._write_records(maps, decoded, rows, first_line, os.path.join(ac.logdir, prefix))
            n += write_attention(maps, [f"{prefix}sentence{first_line + i}" for i in rows],
                                 logdir=ac.logdir if ac.images else None, png_dir=ac.png_dir,
                                 ascii_stream=sys.stderr if ac.ascii else None, words=ac.words,
                                 all_layers=ac.all_layers)
        if ac.logdir:
            log.info("wrote the attention of %d sentences to %s (tensorboard --logdir %s: Attention tab)", len(rows),
                     ac.logdir, ac.logdir)
        if n:
            log.info("wrote %d attention figures to %s", n, " and ".join(p for p in (ac.logdir, ac.png_dir) if p))

    def _write_records(self, maps, decoded: Decoded, rows: list[int], first_line: int, logdir: str) -> None:
        from nmt.tensorboard.writer import make_record, write_event_file

        search = {"beam_size": self.defaults.beam_size, "length_penalty": self.search.length_penalty
                  if self.defaults.length_penalty is None else self.defaults.length_penalty}
        records = [make_record(m, first_line + i - 1, 0, decoded.sources[i], decoded.translations[i][0].text,
                               score=decoded.hypotheses[i][0].score, search=search) for m, i in zip(maps, rows)]
        write_event_file(logdir, records)


class CT2Engine:
    """A model exported by ``nmt-export`` (``model=DIR``), decoded by CTranslate2; no alignments.

    Raises:
        SystemExit: no ``model``, alignments or figures asked for, or a bad model directory.
    """

    supports_alignment = False

    def __init__(self, cfg) -> None:
        from nmt.export.ctranslate2 import CT2Translator, ExportError

        if not cfg.model:
            raise SystemExit("error: engine=ctranslate2 needs model=DIR (a directory written by nmt-export)")
        if cfg.print_alignment or cfg.attention.logdir or cfg.attention.png_dir or cfg.attention.ascii:
            raise SystemExit("error: alignments and attention figures need engine=torch and ckpt=...")
        try:
            self.translator = CT2Translator(cfg.model, device=cfg.device, compute_type=cfg.compute_type,
                                            intra_threads=max(cfg.num_threads, 0))
        except (ExportError, RuntimeError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        self.cfg = cfg
        beam = cfg.beam_size or int(self.translator.meta["search"]["beam_size"])
        self.defaults = DecodeSettings(beam_size=beam, nbest=cfg.nbest, length_penalty=cfg.length_penalty)

    def translate(self, lines: Sequence[str], settings: DecodeSettings, first_line: int = 1) -> Decoded:
        """Translate ``lines``; scores are CTranslate2's (see :meth:`CT2Translator.translate`)."""
        results = self.translator.translate(list(lines), beam_size=settings.beam_size,
                                            length_penalty=settings.length_penalty, nbest=settings.nbest,
                                            batch_size=self.cfg.batch_size)
        return Decoded([[Translated(t, s) for t, s in hyps] for hyps in results])

    def heatmap(self, decoded: Decoded, line: int) -> Optional[str]:
        """CTranslate2 returns no attention here: always None."""
        return None

    def write_figures(self, decoded: Decoded, first_line: int) -> None:  # refused in __init__
        raise SystemExit("error: attention figures need engine=torch")


ENGINES = {"torch": TorchEngine, "ctranslate2": CT2Engine}


def build_engine(cfg):
    """The engine named by ``cfg.engine``.

    Raises:
        SystemExit: an unknown engine, or what the engine's constructor raises.
    """
    if cfg.engine not in ENGINES:
        raise SystemExit(f"error: unknown engine={cfg.engine!r}; expected torch or ctranslate2")
    return ENGINES[cfg.engine](cfg)

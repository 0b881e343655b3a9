"""Alignment matrices as data: subword pieces merged into words, hard word alignments, the
Pharaoh format, alignment error rate, and summary statistics of attention.

Everything here is pure tensor/list code (no model, no plotting). Conventions: a matrix is
``(T, S)`` with one row per target token and one column per source token; rows are attention
distributions (they sum to one). Word and piece indices are 0-based; a Pharaoh link ``i-j``
names source word ``i`` and target word ``j`` (Koehn et al. 2003, the Moses/fast_align format).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

WORD_START = "\u2581"  # sentencepiece's word-boundary mark "▁"
SPECIAL_PIECES = ("</s>", "<s>", "<pad>", "<unk>")

Link = tuple[int, int]  # (source word, target word)


def word_spans(pieces: Sequence[str]) -> list[list[int]]:
    """Group subword pieces into words: a piece that starts with ``▁`` starts a new word, and
    special pieces (``</s>``, ``<unk>`` ...) are words of their own.

    >>> word_spans(["▁Ein", "▁Hund", "e", "▁", ".", "</s>"])
    [[0], [1, 2], [3, 4], [5]]
    """
    spans: list[list[int]] = []
    for k, piece in enumerate(pieces):
        special = piece in SPECIAL_PIECES
        if not spans or special or piece.startswith(WORD_START) or pieces[k - 1] in SPECIAL_PIECES:
            spans.append([k])
        else:
            spans[-1].append(k)
    return spans


def join_pieces(pieces: Sequence[str], spans: Sequence[Sequence[int]]) -> list[str]:
    """The text of each word: its pieces concatenated without the ``▁`` marks."""
    return ["".join(pieces[k] for k in span).replace(WORD_START, "") or WORD_START for span in spans]


def merge_subwords(matrix: Tensor, tgt_pieces: Sequence[str], src_pieces: Sequence[str]
                   ) -> tuple[Tensor, list[str], list[str]]:
    """Turn a piece-level attention matrix into a word-level one.

    Columns of one source word are summed (the attention mass a word received) and rows of one
    target word are averaged (the word's mean distribution), so rows still sum to one.

    Args:
        matrix: ``(..., T, S)`` attention weights, T = ``len(tgt_pieces)``, S = ``len(src_pieces)``
            (leading dimensions, e.g. heads, are kept).
        tgt_pieces, src_pieces: the labels of the rows and columns.
    Returns:
        ``(..., T_words, S_words)`` matrix, target words, source words.
    Raises:
        ValueError: when the matrix shape does not match the labels.
    """
    if matrix.shape[-2:] != (len(tgt_pieces), len(src_pieces)):
        raise ValueError(f"matrix of shape {tuple(matrix.shape)} does not match {len(tgt_pieces)} target "
                         f"and {len(src_pieces)} source pieces")
    src_spans, tgt_spans = word_spans(src_pieces), word_spans(tgt_pieces)
    cols = torch.stack([matrix[..., span].sum(-1) for span in src_spans], dim=-1)  # (..., T, S_w)
    rows = torch.stack([cols[..., span, :].mean(-2) for span in tgt_spans], dim=-2)  # (..., T_w, S_w)
    return rows, join_pieces(tgt_pieces, tgt_spans), join_pieces(src_pieces, src_spans)


def hard_alignment(matrix: Tensor, tgt_words: Optional[Sequence[str]] = None,
                   src_words: Optional[Sequence[str]] = None) -> list[Link]:
    """Each target word is linked to the source word it attends to most (the argmax rule of
    fairseq's ``--print-alignment``; Garg et al. 2019 §3). Special tokens (``</s>``) on either
    side are never linked.

    Args:
        matrix: ``(T, S)`` word-level weights.
        tgt_words, src_words: labels used to skip special tokens (optional).
    Returns:
        ``(source index, target index)`` pairs sorted by source then target index.
    """
    m = matrix.detach().float().clone()
    if src_words is not None:
        for i, w in enumerate(src_words):
            if w in SPECIAL_PIECES:
                m[:, i] = -1.0
    links = []
    for j in range(m.size(0)):
        if tgt_words is not None and tgt_words[j] in SPECIAL_PIECES:
            continue
        if m.size(1) == 0 or float(m[j].max()) < 0:
            continue
        links.append((int(m[j].argmax()), j))
    return sorted(links)


def format_pharaoh(links: Iterable[Link]) -> str:
    """``[(0, 0), (2, 1)]`` -> ``"0-0 2-1"`` (source index first)."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


_LINK = re.compile(r"^(\d+)(?:(-)(\d+)(?:-([SsPp]))?|([?pP])(\d+))$")


def parse_pharaoh(line: str, where: str = "<input>") -> tuple[set[Link], set[Link]]:
    """Parse one line of gold links into ``(sure, possible)``; ``possible`` includes ``sure``
    (Och & Ney 2003 §4: S ⊆ P).

    Accepted link formats (whitespace-separated, source index first, 0-based):

    * ``i-j`` — a sure link (what aligners print);
    * ``i?j`` or ``ipj`` — a possible link (the ``?`` convention of the fast_align/awesome-align
      evaluation scripts);
    * ``i-j-S`` / ``i-j-P`` — explicitly sure or possible (either case).

    Raises:
        ValueError: naming ``where`` (file and line) and the first token that is not a link.
    """
    sure: set[Link] = set()
    possible: set[Link] = set()
    for token in line.split():
        m = _LINK.match(token)
        if m is None:
            raise ValueError(f"{where}: {token!r} is not an alignment link (expected i-j, i?j, ipj, i-j-S or i-j-P)")
        i = int(m.group(1))
        if m.group(2):
            j, label = int(m.group(3)), (m.group(4) or "S").upper()
        else:
            j, label = int(m.group(6)), "P"
        possible.add((i, j))
        if label == "S":
            sure.add((i, j))
    return sure, possible


def read_pharaoh(path: str) -> list[tuple[set[Link], set[Link]]]:
    """Read a gold alignment file: one line of links per sentence pair (an empty line = no link).

    Raises:
        ValueError: for a malformed link or invalid UTF-8, with file and line.
    """
    raw = open(path, "rb").read()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} line {n}: invalid UTF-8 at byte {err.start}") from None
        out.append(parse_pharaoh(text, f"{path} line {n}"))
    return out


@dataclass
class AlignmentScores:
    """Corpus-level alignment quality (Och & Ney 2003 §4), each in [0, 1].

    precision = |A∩P| / |A|, recall = |A∩S| / |S|, AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|),
    with the counts summed over sentences.
    """

    aer: float
    precision: float
    recall: float
    links: int
    sure: int
    possible: int


def alignment_error_rate(hypotheses: Sequence[set[Link]], gold: Sequence[tuple[set[Link], set[Link]]]
                         ) -> AlignmentScores:
    """Score predicted links against gold sure/possible links.

    Args:
        hypotheses: per sentence, the predicted links A.
        gold: per sentence, ``(sure, possible)`` as returned by :func:`parse_pharaoh`.
    Raises:
        ValueError: when the numbers of sentences differ, or there are neither predicted nor sure links.
    """
    if len(hypotheses) != len(gold):
        raise ValueError(f"{len(hypotheses)} predicted alignments but {len(gold)} gold alignments")
    a_total = s_total = p_total = a_s = a_p = 0
    for links, (sure, possible) in zip(hypotheses, gold):
        links, possible = set(links), set(possible) | set(sure)
        a_total += len(links)
        s_total += len(sure)
        p_total += len(possible)
        a_s += len(links & sure)
        a_p += len(links & possible)
    if a_total + s_total == 0:
        raise ValueError("no predicted and no sure gold links: AER is undefined")
    return AlignmentScores(aer=1.0 - (a_s + a_p) / (a_total + s_total),
                           precision=a_p / a_total if a_total else 0.0,
                           recall=a_s / s_total if s_total else 0.0,
                           links=a_total, sure=s_total, possible=p_total)


def entropy_sum(weights: Tensor, row_mask: Optional[Tensor] = None) -> tuple[float, int]:
    """Sum of row entropies (nats) and the number of rows summed, for averaging over batches.

    Args:
        weights: ``(B, H, T, S)`` rows summing to one.
        row_mask: ``(B, T)`` bool, True for real query rows (padding rows are skipped).
    """
    w = weights.detach().float()
    ent = -(w * torch.log(w.clamp_min(1e-12))).sum(-1)  # (B, H, T)
    if row_mask is None:
        return float(ent.sum()), ent.numel()
    mask = row_mask[:, None, :].expand_as(ent)
    return float(ent[mask].sum()), int(mask.sum())


def attention_entropy(weights: Tensor, row_mask: Optional[Tensor] = None) -> float:
    """Mean entropy (nats) of the attention rows of ``weights`` ``(B, H, T, S)``: 0 for one-hot
    rows, log S for uniform ones (NaN when there is no real row). See :func:`entropy_sum`."""
    total, count = entropy_sum(weights, row_mask)
    return total / count if count else math.nan


def coverage_deviation_sum(weights: Tensor, tgt_mask: Tensor, src_mask: Tensor) -> tuple[float, int]:
    """Sum over real source tokens of |Σ_t a_ts − 1| and the number of those tokens.

    How far each source token's total received attention is from one: 0 when every source
    token is attended exactly once in total (the coverage view of Tu et al. 2016).

    Args:
        weights: ``(B, H, T, S)`` cross-attention (averaged over heads here).
        tgt_mask: ``(B, T)`` bool, real target rows; src_mask: ``(B, S)`` bool, real source columns.
    """
    w = weights.detach().float().mean(1) * tgt_mask[:, :, None]  # (B, T, S)
    dev = (w.sum(1) - 1.0).abs()[src_mask]
    return float(dev.sum()), dev.numel()


def coverage_deviation(weights: Tensor, tgt_mask: Tensor, src_mask: Tensor) -> float:
    """Mean over real source tokens of |Σ_t a_ts − 1| (see :func:`coverage_deviation_sum`)."""
    total, count = coverage_deviation_sum(weights, tgt_mask, src_mask)
    return total / count if count else math.nan

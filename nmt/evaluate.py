"""Translate a corpus and score it with sacrebleu (BLEU, lowercased BLEU, chrF), with signatures."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from nmt.data.batch import Batch
from nmt.search import Hypothesis, search

log = logging.getLogger(__name__)


def translate_ids(model, src_ids: Sequence[Sequence[int]], beam_size: int = 5, length_penalty: float = 1.0,
                  max_len_a: float = 1.2, max_len_b: int = 10, nbest: int = 1, batch_size: int = 64,
                  max_src_len: Optional[int] = None, need_attn: bool = False,
                  device: str | torch.device = "cpu") -> list[list[Hypothesis]]:
    """Decode id sequences in length-sorted batches and return hypotheses in input order.

    Empty inputs are not decoded and get one empty hypothesis (R25). Inputs longer than
    ``max_src_len`` tokens are truncated with a warning.
    """
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0, None)] for _ in src_ids]
    todo = [i for i, s in enumerate(src_ids) if len(s) > 0]
    todo.sort(key=lambda i: len(src_ids[i]))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            seqs = []
            for i in chunk:
                s = list(src_ids[i])
                if max_src_len is not None and len(s) > max_src_len:
                    log.warning("input line %d has %d tokens; truncated to %d", i + 1, len(s), max_src_len)
                    s = s[:max_src_len]
                seqs.append(s)
            batch = Batch.collate(seqs, indices=chunk).to(device)
            hyps = search(model, batch, beam_size=beam_size, length_penalty=length_penalty, max_len_a=max_len_a,
                          max_len_b=max_len_b, nbest=nbest, need_attn=need_attn)
            for i, h in zip(chunk, hyps):
                results[i] = h
    finally:
        model.train(was_training)
    return results


def translate_texts(model, tokenizer, texts: Sequence[str], **kwargs) -> list[list[Hypothesis]]:
    """Encode ``texts`` with the source tokenizer and call :func:`translate_ids`."""
    return translate_ids(model, tokenizer.encode_src(list(texts)), **kwargs)


def score_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """sacrebleu BLEU (13a, cased), lowercased BLEU and chrF on detokenised text (R29).

    Returns a dict with ``bleu``, ``bleu_lc``, ``chrf`` and their ``*_signature`` strings.

    Raises:
        ValueError: when the numbers of hypotheses and references differ.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    hyps, refs = list(hypotheses), [list(references)]
    out = {}
    for key, metric in (("bleu", BLEU()), ("bleu_lc", BLEU(lowercase=True)), ("chrf", CHRF())):
        out[key] = round(metric.corpus_score(hyps, refs).score, 2)
        out[f"{key}_signature"] = str(metric.get_signature())
    return out

"""Batched beam search over the decoder contract (one loop for every architecture).

The loop has the shape initialise -> step -> advance -> finalise finished -> drop finished
sentences -> reorder state. Like fairseq, each step keeps the 2K best candidates of a
sentence so that K live hypotheses remain after the ones ending in EOS are set aside; a
sentence is done when it has K finished hypotheses or reaches its maximum length.
"""
from __future__ import annotations

import torch
from torch import Tensor

from nmt.data.batch import BOS_ID, EOS_ID, PAD_ID, Batch
from nmt.search.hypothesis import Hypothesis
from nmt.search.penalties import gnmt_length_penalty, max_output_lengths, output_limit

NEG_INF = float("-inf")


@torch.no_grad()
def beam_search(model, batch: Batch, beam_size: int = 5, length_penalty: float = 1.0, max_len_a: float = 1.2,
                max_len_b: int = 10, nbest: int = 1, need_attn: bool = True) -> list[list[Hypothesis]]:
    """Decode ``batch`` with beam search.

    Args:
        model: provides ``encode``, ``init_state``, ``step`` and ``max_positions``
            (:class:`nmt.models.Seq2Seq`).
        beam_size: K, hypotheses kept per sentence.
        length_penalty: GNMT alpha (Wu et al. 2016 eq. 14); finished hypotheses are ranked by
            ``log P / lp``.
        max_len_a, max_len_b: at most ``a * src_len + b`` tokens before EOS, and never more
            than ``model.max_positions - 1`` (:func:`~nmt.search.penalties.output_limit`).
        nbest: hypotheses returned per sentence (<= K).
    Returns:
        for each sentence in batch order, up to ``nbest`` :class:`Hypothesis`, best first.
    Raises:
        ValueError: when ``nbest > beam_size`` or ``beam_size < 1``.
    """
    if beam_size < 1 or nbest > beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    k = beam_size
    bsz = batch.size
    device = batch.src_tokens.device
    enc = model.encode(batch.src_tokens, batch.src_lengths, batch.src_mask)
    state = model.init_state(enc).expand(k)  # K hypotheses per sentence (encoder entries kept once)
    src_lengths = batch.src_lengths.cpu()
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b, output_limit(model))

    active = torch.arange(bsz)  # sentence id of each active sentence
    tokens = torch.full((bsz * k, 1), BOS_ID, dtype=torch.long)  # (b*K, 1 + t)
    scores = torch.full((bsz, k), NEG_INF)
    scores[:, 0] = 0.0  # only the first beam is alive at step 0
    align = torch.zeros(bsz * k, 0, batch.src_tokens.size(1))  # (b*K, t, S)
    finished: list[list[Hypothesis]] = [[] for _ in range(bsz)]

    for step in range(int(max_lens.max()) + 1):
        lprobs, attn, state = model.step(tokens[:, -1:].to(device), state, need_attn=need_attn)
        lprobs = lprobs.cpu()
        vocab = lprobs.size(-1)
        lprobs[:, PAD_ID] = lprobs[:, BOS_ID] = NEG_INF
        at_max = (step >= max_lens[active]).repeat_interleave(k)
        if bool(at_max.any()):
            eos_only = torch.full((vocab,), NEG_INF)
            eos_only[EOS_ID] = 0.0
            lprobs[at_max] = lprobs[at_max] + eos_only
        if attn is not None:
            align = torch.cat([align, attn.cpu()[:, None, :]], dim=1)
        nb = active.numel()
        cand = (scores.view(-1, 1) + lprobs).view(nb, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=1)  # (b, 2K)
        top_beam, top_tok = top_idx // vocab, top_idx % vocab
        is_eos = (top_tok == EOS_ID) & (top_scores > NEG_INF)

        done = _finalise(finished, active, is_eos, top_scores, top_beam, tokens, align if attn is not None else None,
                         src_lengths, step, k, length_penalty, max_lens)

        live_scores, pos = top_scores.masked_fill(is_eos, NEG_INF).topk(k, dim=1)  # best K non-EOS
        rows = torch.arange(nb)[:, None] * k + top_beam.gather(1, pos)  # (b, K) parent rows
        next_tok = top_tok.gather(1, pos)
        keep = ~done
        if not bool(keep.any()):
            break
        rows, next_tok = rows[keep].view(-1), next_tok[keep].view(-1, 1)
        tokens = torch.cat([tokens[rows], next_tok], dim=1)
        align = align[rows]
        scores = live_scores[keep]
        active = active[keep]
        state = state.index_select(rows.to(device))

    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _finalise(finished: list[list[Hypothesis]], active: Tensor, is_eos: Tensor, top_scores: Tensor,
              top_beam: Tensor, tokens: Tensor, align: Tensor | None, src_lengths: Tensor, step: int, k: int,
              alpha: float, max_lens: Tensor) -> Tensor:
    """Move EOS candidates ranked among the first K into ``finished``; return ``(b,)`` done flags."""
    eos_rank = is_eos[:, :k].nonzero().tolist()
    length = step + 1  # output tokens including EOS
    for i, r in eos_rank:
        sent = int(active[i])
        if len(finished[sent]) >= k:
            continue
        row = i * k + int(top_beam[i, r])
        log_prob = float(top_scores[i, r])
        alignment = None if align is None else align[row, :, : int(src_lengths[sent])].clone()
        finished[sent].append(Hypothesis(tokens[row, 1:].tolist(), log_prob / gnmt_length_penalty(length, alpha),
                                         log_prob, alignment))
    counts = torch.tensor([len(finished[int(s)]) for s in active])
    return (counts >= k) | (step >= max_lens[active])

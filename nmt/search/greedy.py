"""Greedy decoding over the decoder contract."""
from __future__ import annotations

import torch

from nmt.data.batch import BOS_ID, EOS_ID, PAD_ID, Batch
from nmt.search.hypothesis import Hypothesis
from nmt.search.penalties import gnmt_length_penalty, max_output_lengths, output_limit


@torch.no_grad()
def greedy_search(model, batch: Batch, max_len_a: float = 1.2, max_len_b: int = 10, length_penalty: float = 0.0,
                  need_attn: bool = True) -> list[list[Hypothesis]]:
    """Pick the most probable token at each step until EOS or the maximum length.

    ``model`` provides ``encode``, ``init_state``, ``step`` and ``max_positions`` (see
    :class:`nmt.models.Seq2Seq`); at most ``max_len_a * src_len + max_len_b`` tokens are produced
    before EOS, and never more than ``model.max_positions - 1``.
    Returns one single-element list of :class:`Hypothesis` per sentence, in batch order.
    """
    bsz = batch.size
    enc = model.encode(batch.src_tokens, batch.src_lengths, batch.src_mask)
    state = model.init_state(enc)
    max_lens = max_output_lengths(batch.src_lengths, max_len_a, max_len_b, output_limit(model))
    tokens = torch.full((bsz, 1), BOS_ID, dtype=torch.long, device=batch.src_tokens.device)
    log_probs = torch.zeros(bsz)
    finished = torch.zeros(bsz, dtype=torch.bool)
    lengths = torch.zeros(bsz, dtype=torch.long)
    attns = []
    for step in range(int(max_lens.max()) + 1):
        lprobs, attn, state = model.step(tokens[:, -1:], state, need_attn=need_attn)
        lprobs = lprobs.cpu()
        lprobs[:, PAD_ID] = lprobs[:, BOS_ID] = float("-inf")
        at_max = step >= max_lens
        lprobs[at_max] = torch.where(torch.arange(lprobs.size(1)) == EOS_ID, lprobs[at_max], float("-inf"))
        best_lp, best = lprobs.max(dim=-1)
        best = torch.where(finished, torch.full_like(best, PAD_ID), best)
        log_probs += torch.where(finished, torch.zeros_like(best_lp), best_lp)
        lengths += (~finished).long()
        finished |= best == EOS_ID
        tokens = torch.cat([tokens, best.to(tokens.device)[:, None]], dim=1)
        if attn is not None:
            attns.append(attn.cpu())
        if bool(finished.all()):
            break
    results = []
    for i in range(bsz):
        n = int(lengths[i])  # tokens including EOS
        out = [t for t in tokens[i, 1 : n + 1].tolist() if t != EOS_ID]
        align = None
        if attns:
            align = torch.stack([a[i] for a in attns[:n]])[:, : int(batch.src_lengths[i])]
        lp = float(log_probs[i])
        results.append([Hypothesis(out, lp / gnmt_length_penalty(n, length_penalty), lp, align)])
    return results

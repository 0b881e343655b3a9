"""Decoding: greedy and batched beam search over the shared decoder contract."""
from nmt.search.beam import beam_search
from nmt.search.greedy import greedy_search
from nmt.search.hypothesis import Hypothesis

__all__ = ["beam_search", "greedy_search", "Hypothesis", "search"]


def search(model, batch, beam_size: int = 5, length_penalty: float = 1.0, max_len_a: float = 1.2,
           max_len_b: int = 10, nbest: int = 1, need_attn: bool = True) -> list[list[Hypothesis]]:
    """Greedy search when ``beam_size == 1`` and ``nbest == 1``, beam search otherwise."""
    if beam_size == 1 and nbest == 1:
        return greedy_search(model, batch, max_len_a, max_len_b, length_penalty, need_attn)
    return beam_search(model, batch, beam_size, length_penalty, max_len_a, max_len_b, nbest, need_attn)

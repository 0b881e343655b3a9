"""``nmt-align ckpt=DIR src=FILE tgt=FILE [gold=FILE] [key=value ...]``: forced alignment.

Teacher-forces each target line through the model, takes the cross-attention of one decoder
layer (``layer``, default the model's alignment layer) averaged over heads, of one head
(``head=K``) or of the head or head average with the lowest AER on the gold set (``head=best``,
searched over every layer unless ``layer`` is given; an oracle choice, optimistic on that set), merges subword pieces into words (the whitespace
tokens of each line), links each target word to its most attended source word, and writes one
line of Pharaoh links (``i-j``, source word first, 0-based) per sentence pair.

``logdir=DIR`` writes every pair's attention (and its gold links) for TensorBoard's Attention tab.

With ``gold=FILE`` (one line per pair; ``i-j`` sure, ``i?j``, ``ipj`` or ``i-j-P`` possible,
``i-j-S`` sure) it prints the alignment error rate, precision and recall (Och & Ney 2003) on
stderr and as JSON on the last stderr line. ``gold_reversed=true`` reads gold links as
target-source (a German-English gold file scored with an English-German model).
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Optional

from nmt.cli import one_error_line

log = logging.getLogger("nmt.align")


def choose_heads(maps, layer: Optional[int], head: str, gold, shift: bool):
    """The ``(layer, head)`` to read alignments from (head None = average) and, with gold,
    the scores of every candidate that was tried.

    Raises:
        SystemExit: ``head=best`` without gold, or a head/layer the model does not have.
    """
    from nmt.alignment import alignment_error_rate
    from nmt.attention_maps import word_alignment

    num_layers = len(maps[0].cross) if maps else 1
    num_heads = maps[0].cross[0].size(0) if maps else 1
    layers = range(num_layers) if layer is None else [layer]
    chosen_layer = maps[0].alignment_layer if layer is None and maps else layer
    if chosen_layer is not None and not -num_layers <= chosen_layer < num_layers:
        raise SystemExit(f"error: layer={chosen_layer} but the model has {num_layers} decoder layers")
    if head == "average":
        return chosen_layer, None, {}
    if head != "best":
        try:
            index = int(head)
        except ValueError:
            raise SystemExit(f"error: head={head!r}: expected average, best or a head index") from None
        if not 0 <= index < num_heads:
            raise SystemExit(f"error: head={index} but the model has {num_heads} heads")
        return chosen_layer, index, {}
    if gold is None:
        raise SystemExit("error: head=best needs gold=FILE to choose the head")
    tried = {}
    for lay in layers:
        for h in [None, *range(num_heads)]:  # the layer's head average is a candidate too
            links = [set(word_alignment(m.alignment(lay, h), m.tgt_pieces, m.src_pieces, shift)) for m in maps]
            tried[(lay, h)] = alignment_error_rate(links, gold).aer
    best = min(tried, key=tried.get)
    return best[0], best[1], tried


def write_forced_records(logdir: str, maps, pairs, gold) -> None:
    """Every pair's attention (with its gold links) for the Attention dashboard: sentence = pair
    number - 1, step 0, the given translation as a forced hypothesis."""
    from nmt.tensorboard.writer import make_record, write_event_file

    records = [make_record(m, i, 0, pairs.src[i], pairs.tgt[i], pairs.tgt[i], search={"forced": True},
                           gold=None if gold is None else gold[i]) for i, m in enumerate(maps)]
    write_event_file(logdir, records)
    log.info("wrote the attention of %d pairs to %s (tensorboard --logdir %s: Attention tab)", len(records), logdir,
             logdir)


@one_error_line
def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-align``."""
    from nmt.cli import parse_options
    from nmt.cli.options import AlignConfig

    cfg: Optional[AlignConfig] = parse_options(AlignConfig, __doc__, sys.argv[1:] if argv is None else argv)
    if cfg is None:
        return

    from nmt.alignment import alignment_error_rate, format_pharaoh, read_pharaoh
    from nmt.attention_maps import collect_attention, word_alignment
    from nmt.data.errors import DataError
    from nmt.data.text import read_parallel
    from nmt.io import atomic_write_text
    from nmt.checkpoint import CheckpointError, load_model
    from nmt.evaluate import source_limit, truncate_sources

    try:
        pairs = read_parallel(cfg.src, cfg.tgt, on_empty="error", name="alignment input")
        gold = None
        if cfg.gold:
            gold = read_pharaoh(cfg.gold)
            if len(gold) != len(pairs):
                raise DataError(f"{cfg.gold} has {len(gold)} lines but {cfg.src} has {len(pairs)}")
            if cfg.gold_reversed:
                gold = [({(i, j) for j, i in s}, {(i, j) for j, i in p}) for s, p in gold]
    except (DataError, ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    try:
        loaded = load_model(cfg.ckpt, device=cfg.device)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    tok = loaded.tokenizer
    max_len = source_limit(loaded.model)
    src_ids = truncate_sources(tok.encode_src(pairs.src), max_len)
    tgt_ids = [t[:max_len] for t in tok.encode_tgt(pairs.tgt)]  # forced decoding reads the same positions
    maps = collect_attention(loaded.model, tok, src_ids, tgt_ids, batch_size=cfg.batch_size)
    layer, head, tried = choose_heads(maps, cfg.layer, cfg.head, gold, cfg.shift)
    links = [word_alignment(m.alignment(layer, head), m.tgt_pieces, m.src_pieces, cfg.shift) for m in maps]
    text = "".join(format_pharaoh(x) + "\n" for x in links)
    if cfg.output:
        atomic_write_text(cfg.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if cfg.logdir:
        write_forced_records(cfg.logdir, maps, pairs, gold)
    if gold is not None:
        scores = alignment_error_rate([set(x) for x in links], gold)
        what = f"layer {layer}, " + ("head average" if head is None else f"head {head}")
        if tried:
            what += f" (best of {len(tried)} heads and head averages by AER)"
        sys.stderr.write(f"AER {scores.aer:.4f}  precision {scores.precision:.4f}  recall {scores.recall:.4f}  "
                         f"({scores.links} links, {scores.sure} sure, {scores.possible} possible; {what})\n")
        sys.stderr.write(json.dumps({"aer": round(scores.aer, 4), "precision": round(scores.precision, 4),
                                     "recall": round(scores.recall, 4), "layer": layer, "head": head,
                                     "shift": cfg.shift, "sentences": len(links)}) + "\n")


if __name__ == "__main__":
    main()

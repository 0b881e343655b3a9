"""``nmt-evaluate ckpt=DIR split=test2016``: decode a split and print sacrebleu scores."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("nmt.evaluate")


def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-evaluate``; prints cased BLEU, lowercased BLEU and chrF with signatures,
    then the whole result as one JSON line."""
    evaluate(sys.argv[1:] if argv is None else argv)


def evaluate(argv: list[str]) -> dict:
    """Run an evaluation from ``key=value`` arguments and return the result dict."""
    from nmt.cli import parse_options
    from nmt.config import EvaluateConfig

    cfg: Optional[EvaluateConfig] = parse_options(EvaluateConfig, __doc__, argv)
    if cfg is None:
        return {}

    from nmt.data.corpus import DataError, load_split, read_parallel
    from nmt.evaluate import score_corpus, translate_texts
    from nmt.io import atomic_write_text
    from nmt.train.checkpoint import CheckpointError, load_model

    try:
        loaded = load_model(cfg.ckpt, device=cfg.device)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    data_cfg = loaded.config.data
    if cfg.data_dir:
        data_cfg = dataclasses.replace(data_cfg, dir=cfg.data_dir)
    data_cfg = dataclasses.replace(data_cfg, max_test_pairs=None, max_valid_pairs=None)
    try:
        if cfg.src or cfg.ref:
            if not (cfg.src and cfg.ref):
                raise SystemExit("error: give both src=FILE and ref=FILE")
            corpus = read_parallel(cfg.src, cfg.ref, drop_empty=False, name=cfg.src)
        else:
            corpus = load_split(data_cfg, cfg.split)
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    sc = loaded.config.search
    beam = cfg.beam_size or sc.beam_size
    lp = sc.length_penalty if cfg.length_penalty is None else cfg.length_penalty
    t0 = time.monotonic()
    hyps = translate_texts(loaded.model, loaded.tokenizer, corpus.src, beam_size=beam, length_penalty=lp,
                           max_len_a=sc.max_len_a, max_len_b=sc.max_len_b, batch_size=cfg.batch_size,
                           max_src_len=loaded.config.model.max_positions - 1, device=cfg.device)
    texts = loaded.tokenizer.decode_tgt([h[0].tokens for h in hyps])
    seconds = time.monotonic() - t0
    scores = score_corpus(texts, corpus.tgt)
    name = Path(cfg.src).name if cfg.src else f"{cfg.split}.{data_cfg.tgt_lang}"
    out_path = Path(cfg.output) if cfg.output else loaded.path.parent.parent / f"hyp.{name}"
    atomic_write_text(out_path, "".join(t + "\n" for t in texts))
    print(f"BLEU = {scores['bleu']:.2f}  ({scores['bleu_signature']})")
    print(f"BLEU (lowercased) = {scores['bleu_lc']:.2f}  ({scores['bleu_lc_signature']})")
    print(f"chrF = {scores['chrf']:.2f}  ({scores['chrf_signature']})")
    result = {"checkpoint": str(loaded.path), "split": name, "sentences": len(texts), "beam_size": beam,
              "length_penalty": lp, "decode_seconds": round(seconds, 2), "hypotheses": str(out_path), **scores}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

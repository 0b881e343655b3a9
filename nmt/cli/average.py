"""``nmt-average run=RUN_DIR [n=5] [by=bleu|last] [out=DIR] [keep=better|always]``: checkpoint averaging
(Vaswani et al. 2017 §6.1).

Averages the weights of the run's N best checkpoints by dev BLEU (``by=bleu``, from each
checkpoint's meta.json) or its N latest (``by=last``), scores the average on the dev split with
the checkpoint's search settings, and compares it with the run's best checkpoint decoded the same
way. The average is written as an ordinary checkpoint (default <run>/checkpoints/averaged, usable
with nmt-translate/nmt-evaluate ckpt=...); with keep=better (the default) it becomes the run's
``best`` in checkpoints.json only when its dev BLEU is higher, with keep=always in any case.
Prints a short report, then the result as one JSON line.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional


def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-average``."""
    average(sys.argv[1:] if argv is None else argv)


def _report(result: dict) -> None:
    dev, avg, best = result["dev"], result["average"], result["best"]
    print(f"averaged {len(result['averaged'])} checkpoints ({'best dev BLEU' if result['by'] == 'bleu' else 'latest'}):"
          f" {', '.join(result['averaged'])}")
    print(f"dev {dev['split']} ({dev['sentences']} sentences, beam {dev['beam_size']}, "
          f"length penalty {dev['length_penalty']:g}):")
    for label, s in (("average", avg), (f"best ({best['checkpoint']})", best)):
        print(f"  {label:<24} BLEU {s['bleu']:6.2f}  chrF {s['chrf']:6.2f}  TER {s['ter']:6.2f}")
    verdict = f"{'better' if avg['bleu'] > best['bleu'] else 'not better'} than the best checkpoint"
    where = f"written to {result['saved']}" if result["saved"] else "not written"
    print(f"the average is {verdict}; {where}; run's best: {result['run_best']}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"BLEU signature: {avg['bleu_signature']}")


def average(argv: list[str]) -> dict:
    """Run ``nmt-average`` from ``key=value`` arguments, print the report and return the result."""
    from nmt.cli import parse_options
    from nmt.config import AverageConfig

    cfg: Optional[AverageConfig] = parse_options(AverageConfig, __doc__, argv)
    if cfg is None:
        return {}
    from nmt.cli.evaluate import decode_best, search_settings
    from nmt.data.corpus import DataError, load_split
    from nmt.evaluate import score_corpus
    from nmt.train import checkpoint as ckpt_io
    from nmt.train.average import KEEP, average_and_keep, select_checkpoints

    if cfg.keep not in KEEP:
        raise SystemExit(f"error: keep={cfg.keep!r}: choose one of {', '.join(KEEP)}")
    root = ckpt_io.checkpoint_root(cfg.run)
    try:
        paths = select_checkpoints(root, cfg.n, cfg.by)
        loaded = ckpt_io.load_model(root, device=cfg.device, which="best")
        data_cfg = loaded.config.data
        if cfg.data_dir:
            data_cfg = dataclasses.replace(data_cfg, dir=cfg.data_dir)
        dev = load_split(data_cfg, "valid")
    except (ValueError, ckpt_io.CheckpointError) as err:  # DataError is a ValueError
        raise SystemExit(f"error: {err}") from None
    settings = search_settings(loaded, cfg.beam_size, cfg.length_penalty)

    def dev_scores(model) -> dict:
        return score_corpus(decode_best(loaded, model, dev.src, settings, cfg.batch_size, cfg.device), dev.tgt)

    best_scores = dev_scores(loaded.model)
    try:
        outcome = average_and_keep(loaded.model, paths, dev_scores, best_scores["bleu"], loaded.config,
                                   loaded.tokenizer, root, out=Path(cfg.out) if cfg.out else None, keep=cfg.keep,
                                   meta={"averaged_by": cfg.by})
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    result = {"run": str(cfg.run), "by": cfg.by, "n": cfg.n, "averaged": [p.name for p in outcome.paths],
              "dev": {"split": data_cfg.valid_split, "sentences": len(dev.src), **settings},
              "average": outcome.scores,
              "best": {"checkpoint": loaded.path.name, "meta_bleu": (loaded.meta.get("valid") or {}).get("bleu"),
                       **best_scores},
              "kept": outcome.kept, "saved": str(outcome.saved) if outcome.saved else None,
              "run_best": ckpt_io.read_index(root).get("best"), "notes": outcome.notes}
    _report(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

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

import json
import sys
from pathlib import Path
from typing import Optional

from nmt.cli import one_error_line


@one_error_line
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


def check_out(out: Path, root: Path, force: bool) -> None:
    """Refuse an ``out=`` that the average must not replace (R31): the run, its ``checkpoints/``
    folder or anything above them; anything but an empty folder or an nmt checkpoint; a step
    checkpoint of the run; a checkpoint nmt-average did not write, unless ``force``.

    Raises:
        SystemExit: naming ``out`` and why.
    """
    from nmt.checkpoint import is_checkpoint, read_json
    from nmt.io import is_within

    run = root.parent if root.name == "checkpoints" else root
    if is_within(run, out) or is_within(root, out):
        raise SystemExit(f"error: out={out} holds the run {run}: the average would replace it; choose a new folder")
    if out.resolve().parent == root.resolve() and out.name.startswith("step-"):
        raise SystemExit(f"error: out={out}: a step-* name would replace a training checkpoint; choose another name")
    if not (out.exists() or out.is_symlink()) or out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    if not is_checkpoint(out):
        raise SystemExit(f"error: out={out} exists and is not an nmt checkpoint; nmt-average replaces only a "
                         "checkpoint (choose a new folder)")
    if "averaged" not in read_json(out / "meta.json") and not force:
        raise SystemExit(f"error: out={out} is a checkpoint nmt-average did not write; pass force=true to replace it")


def average(argv: list[str]) -> dict:
    """Run ``nmt-average`` from ``key=value`` arguments, print the report and return the result."""
    from nmt.cli import parse_options
    from nmt.cli.options import AverageConfig

    cfg: Optional[AverageConfig] = parse_options(AverageConfig, __doc__, argv)
    if cfg is None:
        return {}
    from nmt.checkpoint import CheckpointError, load_model
    from nmt.cli.evaluate import inference_data
    from nmt.data.splits import load_split
    from nmt.train import checkpoint as ckpt_io
    from nmt.train.average import KEEP

    if cfg.keep not in KEEP:
        raise SystemExit(f"error: keep={cfg.keep!r}: choose one of {', '.join(KEEP)}")
    root = ckpt_io.checkpoint_root(cfg.run)
    if not root.is_dir():
        raise SystemExit(f"error: run={cfg.run} is not a directory")
    out = Path(cfg.out) if cfg.out else root / "averaged"
    check_out(out, root, cfg.force)
    try:  # the best checkpoint and the dev data are checked before anything is written (R30)
        loaded = load_model(root, device=cfg.device, which="best")
        data_cfg = inference_data(loaded.config.data, cfg.data_dir, cfg.hf_name)
        dev = load_split(data_cfg, "valid")
    except (ValueError, CheckpointError) as err:  # DataError is a ValueError
        raise SystemExit(f"error: {err}") from None
    try:  # a trainer writing the run holds its lock: averaging then would race its saves (R32)
        lock = ckpt_io.RunLock(root.parent if root.name == "checkpoints" else root, purpose="averages").acquire()
    except (ckpt_io.RunInUse, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    try:
        return _average(cfg, root, out, loaded, data_cfg, dev)
    except (ValueError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        lock.release()


def _average(cfg, root: Path, out: Path, loaded, data_cfg, dev) -> dict:
    """The work of :func:`average` once the inputs are checked and the run is locked."""
    from nmt.checkpoint import read_index
    from nmt.cli.evaluate import decode_best, search_settings
    from nmt.evaluate import score_corpus
    from nmt.train.average import average_and_keep, select_checkpoints

    paths = select_checkpoints(root, cfg.n, cfg.by, min_step=loaded.config.train.validate_after_updates)
    settings = search_settings(loaded, cfg.beam_size, cfg.length_penalty)

    def dev_scores(model) -> dict:
        return score_corpus(decode_best(loaded, model, dev.src, settings, cfg.batch_size, cfg.device), dev.tgt)

    best_scores = dev_scores(loaded.model)
    outcome = average_and_keep(loaded.model, paths, dev_scores, best_scores["bleu"], loaded.config,
                               loaded.tokenizer, root, out=out, keep=cfg.keep, meta={"averaged_by": cfg.by})
    result = {"run": str(cfg.run), "by": cfg.by, "n": cfg.n, "averaged": [p.name for p in outcome.paths],
              "dev": {"split": data_cfg.valid_split, "sentences": len(dev.src), **settings},
              "average": outcome.scores,
              "best": {"checkpoint": loaded.path.name, "meta_bleu": (loaded.meta.get("valid") or {}).get("bleu"),
                       **best_scores},
              "kept": outcome.kept, "saved": str(outcome.saved) if outcome.saved else None,
              "run_best": read_index(root).get("best"), "notes": outcome.notes}
    _report(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

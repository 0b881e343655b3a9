"""The end of training (rank 0): checkpoint averaging (Vaswani et al. 2017 §6.1), the length
penalty chosen on dev (Wu et al. 2016 eq. 14; never on test), the test split with the chosen
model, and ``results.json``."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from nmt.evaluate import score_corpus
from nmt.io import atomic_write_text, inside
from nmt.train.budget import TimeBudget
from nmt.train.checkpoints import Checkpoints
from nmt.train.monitor import Monitor, hparams_of
from nmt.train.state import Progress
from nmt.train.validator import Validator
from nmt.versions import versions

log = logging.getLogger("nmt.train")


def final_evaluation(stop_reason: str, *, cfg, model, tokenizer, test, progress: Progress, budget: TimeBudget,
                     checkpoints: Checkpoints, validator: Validator, monitor: Monitor, num_params: int,
                     world_size: int) -> dict:
    """Load the best checkpoint (or an average that beats it), tune the length penalty on dev if
    asked, decode the test split, write ``<run>/results.json`` and the test hypotheses; returns
    the results."""
    from safetensors.torch import load_model as st_load

    p = progress
    best = checkpoints.resolve("best")
    chosen = best.name
    st_load(model, str(best / "model.safetensors"))
    if cfg.train.average_last > 1 or cfg.train.average_best > 1:
        chosen = try_average(cfg, model, tokenizer, progress, checkpoints, validator) or chosen
    dev_alpha = tune_length_penalty(cfg, checkpoints.dir / chosen, validator) if cfg.train.tune_length_penalty else None
    results = {"stop_reason": stop_reason, "steps": p.step, "epochs_completed": p.epoch - 1,
               "train_minutes": round(p.train_seconds / 60, 2), "num_params": num_params,
               # throughput over the whole training wall time, validations included
               "tgt_tokens_per_s": round(p.tgt_tokens / max(1e-9, p.train_seconds)),
               "src_tokens_per_s": round(p.src_tokens / max(1e-9, p.train_seconds)),
               # the decay's length fitted to the time budget when warmup ended (0 = not fitted), and
               # [update, new end] of each later shortening (nmt.train.budget)
               "fitted_schedule_steps": budget.schedule_steps, "schedule_refits": budget.schedule_refits,
               "checkpoint": chosen, "best_valid_bleu": p.best_bleu, "best_step": p.best_step,
               "src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang,
               "search": asdict(cfg.search), "length_penalty_dev_bleu": dev_alpha,
               "world_size": world_size, "versions": versions(), "history": p.history}
    if cfg.train.eval_test and test is not None:
        results["test"] = _test(cfg, test, validator, checkpoints.run_dir)
    atomic_write_text(checkpoints.run_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    metrics = {"best_valid_bleu": p.best_bleu, "train_minutes": results["train_minutes"],
               "tgt_tokens_per_s": results["tgt_tokens_per_s"]}
    if "test" in results:
        metrics.update({f"test_{k}": results["test"][k] for k in ("bleu", "bleu_lc", "chrf")})
    monitor.hparams(hparams_of(cfg), metrics)
    return results


def _test(cfg, test, validator: Validator, run_dir: Path) -> dict:
    """Decode and score the test split; its hypotheses go to ``<run>/<split>.hyp.<lang>``."""
    t0 = time.monotonic()
    hyps = validator.decode(test.src)
    scores = {"split": cfg.data.test_split, **score_corpus(hyps, test.tgt), "decode_seconds": round(time.monotonic() - t0, 1)}
    hyp_path = inside(run_dir, f"{cfg.data.test_split}.hyp.{cfg.data.tgt_lang}")  # names checked (R30)
    atomic_write_text(hyp_path, "".join(h + "\n" for h in hyps))
    log.info("test %s: BLEU %.2f (%s) | lowercased BLEU %.2f | chrF %.2f", cfg.data.test_split, scores["bleu"],
             scores["bleu_signature"], scores["bleu_lc"], scores["chrf"])
    return scores


def tune_length_penalty(cfg, ckpt: Path, validator: Validator) -> dict:
    """Choose ``search.length_penalty`` on the dev set among ``train.tune_length_penalty``; the
    choice is written into ``ckpt``'s config (and ``cfg``) so that translation uses it. Returns
    ``{alpha: dev BLEU}``."""
    from nmt.config import config_to_yaml

    valid = validator.valid
    scores = {a: score_corpus(validator.decode(valid.src, length_penalty=a), valid.tgt)["bleu"]
              for a in cfg.train.tune_length_penalty}
    best = max(scores, key=lambda a: (scores[a], -abs(a - cfg.search.length_penalty)))
    log.info("length penalty on dev: %s -> %.2f", " ".join(f"{a:g}:{b:.2f}" for a, b in scores.items()), best)
    cfg.search.length_penalty = best
    atomic_write_text(ckpt / "config.yaml", config_to_yaml(cfg))
    return {str(a): b for a, b in scores.items()}


def try_average(cfg, model, tokenizer, progress: Progress, checkpoints: Checkpoints, validator: Validator
                ) -> Optional[str]:
    """Average the best N checkpoints by dev BLEU (``train.average_best``) or the last N from
    ``train.validate_after_updates`` on (``train.average_last``); the average is saved as
    ``averaged`` and becomes ``best`` only if its dev BLEU beats the best single checkpoint.
    Returns ``"averaged"`` when it does."""
    from nmt.train.average import average_and_keep, select_checkpoints

    tc, valid = cfg.train, validator.valid
    n, by = (tc.average_best, "bleu") if tc.average_best > 1 else (tc.average_last, "last")
    try:
        paths = select_checkpoints(checkpoints.dir, n, by, min_step=tc.validate_after_updates)
    except ValueError as err:
        log.warning("no checkpoint averaging: %s", err)
        return None
    k = tc.valid_max_sentences or len(valid.src)  # the sentences the best checkpoint was scored on
    outcome = average_and_keep(model, paths, lambda m: score_corpus(validator.decode(valid.src[:k]), valid.tgt[:k]),
                               progress.best_bleu, cfg, tokenizer, checkpoints.dir, save="kept",
                               meta={"step": progress.step})
    if not outcome.kept:
        return None
    progress.best_bleu = outcome.bleu
    return "averaged"

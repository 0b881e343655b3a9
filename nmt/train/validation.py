"""Validation and the end of training for :class:`nmt.train.trainer.Trainer`: dev loss and
BLEU, attention figures, early stopping, checkpoint averaging, the length penalty chosen on
dev, the test split and ``results.json``."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch

from nmt.attention_maps import attention_statistics, collect_attention
from nmt.data.dataset import BucketingSampler, make_batch
from nmt.evaluate import score_corpus, translate_texts
from nmt.io import atomic_write_text, inside
from nmt.search import Hypothesis
from nmt.tensorboard.writer import Probe, make_record
from nmt.train import checkpoint as ckpt_io
from nmt.train import distributed
from nmt.train.monitor import format_scalars, hparams_of, samples_markdown
from nmt.train.run_state import Progress
from nmt.versions import versions

log = logging.getLogger("nmt.train")


class ValidationMixin:
    """Validation, early stopping and the final evaluation of
    :class:`~nmt.train.trainer.Trainer` (which provides ``cfg``, ``data``, ``dist``, ``model``,
    ``valid_ids``, ``monitor``, ``progress``, ``ckpt_dir``, ``run_dir``, ``device``,
    ``num_params``, ``_loss`` and ``save``)."""

    @torch.no_grad()
    def valid_loss(self) -> dict:
        """Teacher-forced loss and perplexity on the dev set (no label smoothing in ``nll``)."""
        ds = self.valid_ids
        sampler = BucketingSampler(ds.src_lengths, ds.tgt_lengths, max_tokens=self.cfg.train.max_tokens,
                                   shuffle=False)
        self.model.eval()
        loss_sum = nll_sum = 0.0
        ntokens = 0
        for indices in sampler:
            batch = make_batch(ds, indices).to(self.device)
            loss, nll = self._loss(batch)
            loss_sum += float(loss)
            nll_sum += float(nll)
            ntokens += batch.ntokens
        return {"loss": loss_sum / ntokens, "nll": nll_sum / ntokens, "ppl": math.exp(min(50.0, nll_sum / ntokens))}

    def decode_hypotheses(self, sources: list[str], length_penalty: Optional[float] = None) -> list[Hypothesis]:
        """Translate with the configured search (``length_penalty`` overrides it); returns the
        best hypothesis of each source."""
        sc = self.cfg.search
        alpha = sc.length_penalty if length_penalty is None else length_penalty
        hyps = translate_texts(self.model, self.data.tokenizer, sources, beam_size=sc.beam_size,
                               length_penalty=alpha, max_len_a=sc.max_len_a, max_len_b=sc.max_len_b,
                               batch_size=sc.batch_size, need_attn=False, device=self.device,
                               max_src_len=self.cfg.model.max_positions - 1)
        return [h[0] for h in hyps]

    def decode(self, sources: list[str], length_penalty: Optional[float] = None) -> list[str]:
        """:meth:`decode_hypotheses`, detokenised."""
        return self.data.tokenizer.decode_tgt([h.tokens for h in self.decode_hypotheses(sources, length_penalty)])

    def probe_set(self) -> tuple[list[Probe], list[list[int]]]:
        """The probe sentences (a ``train.attention.probe`` file, else the first
        ``train.attention.sentences`` dev sentences) and their source ids, truncated to the
        model's positions."""
        if self.probes is not None:
            ids = self.data.tokenizer.encode_src([p.source for p in self.probes])
            return self.probes, [s[: self.cfg.model.max_positions - 1] for s in ids]
        k = min(self.cfg.train.attention.sentences, len(self.valid_ids))
        valid = self.data.valid
        return [Probe(valid.src[i], valid.tgt[i]) for i in range(k)], [list(s) for s in self.valid_ids.src[:k]]

    def log_attention(self, dev_hyps: list[Hypothesis]) -> float:
        """The Attention dashboard's records of the probe sentences, attention statistics, and
        (``train.attention.images``) alignment figures (TensorBoard).

        ``dev_hyps`` are the search's outputs for the first dev sentences; teacher-forcing a
        hypothesis reproduces the search's attention for every layer and head. A probe file's
        sentences are decoded here with the same search. Failures are logged and never stop
        training; the time spent is logged as ``attention/plot_seconds``.

        Returns:
            Seconds spent on the alignment figures (drawn at every ``train.attention.every``-th
            validation when ``train.attention.images``; 0.0 otherwise).
        """
        ac, step = self.cfg.train.attention, self.progress.step
        t0 = time.monotonic()
        values: dict[str, float] = {}
        figures, figure_seconds = 0, 0.0
        try:
            ds = self.valid_ids
            if ac.stats_sentences > 0:
                k = min(ac.stats_sentences, len(ds))
                values.update(attention_statistics(self.model, ds.src[:k], ds.tgt[:k]))
            probes, src_ids = self.probe_set()
            hyps = dev_hyps[: len(probes)] if self.probes is None else self.decode_hypotheses([p.source for p in probes])
            keep = [i for i, ids in enumerate(src_ids) if ids]  # an empty dev line has no attention
            probes, src_ids, hyps = [probes[i] for i in keep], [src_ids[i] for i in keep], [hyps[i] for i in keep]
            if probes:
                t_summary = time.monotonic()
                maps = collect_attention(self.model, self.data.tokenizer, src_ids, [h.tokens for h in hyps])
                texts = self.data.tokenizer.decode_tgt([h.tokens for h in hyps])
                sc = self.cfg.search
                search = {"beam_size": sc.beam_size, "length_penalty": sc.length_penalty}
                records = [make_record(m, i, step, p.source, text, p.reference, h.score, search, self.cfg.model.arch,
                                       p.gold) for i, m, p, h, text in zip(keep, maps, probes, hyps, texts)]
                values["summary_bytes"] = self.monitor.attention(records)
                values["summary_seconds"] = time.monotonic() - t_summary  # the dashboard's cost (docs/dashboard.md)
                if ac.images and (len(self.progress.history) - 1) % max(1, ac.every) == 0:
                    t_fig = time.monotonic()
                    figures = self._draw_figures(maps)
                    figure_seconds = time.monotonic() - t_fig
        except Exception:  # plotting must never stop training
            log.warning("attention summaries/statistics failed at step %d; training continues", step, exc_info=True)
        values["plot_seconds"] = time.monotonic() - t0
        self.monitor.scalars(step, values, "attention")
        if figures:
            log.info("attention: %d figures and statistics in %.1f s", figures, values["plot_seconds"])
        return figure_seconds

    def _draw_figures(self, maps) -> int:
        """The Images-tab figures of the probe sentences; returns how many were drawn."""
        from nmt.viz import alignment_figures

        ac, count = self.cfg.train.attention, 0
        for i, sentence_maps in enumerate(maps):
            figs = alignment_figures(sentence_maps, f"attention/dev{i}", words=ac.words,
                                     all_layers=ac.all_layers and i < ac.layer_sentences)
            for tag, fig in figs.items():
                self.monitor.figure(tag, fig, self.progress.step)
            count += len(figs)
        return count

    def _validate_and_save(self, before_save: Optional[Callable[[], None]] = None) -> Optional[str]:
        """Validate, checkpoint (latest/best), log; return a stop reason on early stopping.

        ``before_save`` runs after the cycle is timed and before the checkpoint is written, so
        what it changes (the schedule fitted to the time budget) is in the checkpoint: a run
        resumed from it does not fit again.

        In a distributed job rank 0 validates while the others wait, then every rank takes its
        counters (best BLEU, patience) and decision, and all join the checkpoint's collectives.
        """
        t0 = time.monotonic()
        outcome, failure = None, None
        if self.dist.is_main:
            try:
                outcome = self._validate()
            except Exception as err:
                if not self.dist.enabled:
                    raise
                failure = err  # the other ranks wait at the broadcast: tell them, then everyone stops (R34)
        if self.dist.enabled:
            message = None if failure is None else f"validation failed on rank 0: {type(failure).__name__}: {failure}"
            outcome, progress, message = distributed.broadcast_object(self.dist, (outcome, asdict(self.progress),
                                                                                  message))
            if failure is not None:
                raise failure
            if message is not None:
                raise distributed.PeerFailed(message)
            self.progress = Progress(**progress)
        reason, improved, scores, figure_seconds = outcome
        # timed for train.fit_schedule_to_time (the checkpoint's own write is the small rest). The
        # alignment figures are drawn at every `attention.every`-th validation only, so each cycle
        # carries that share of their time (the last drawing's until the next) rather than the
        # cycles that draw them all of it: the first validation draws them, and with
        # train.validate_after_updates it may be the only cycle the fitted schedule has timed. The
        # share is a checkpointed counter, so a resumed run times its cycles as the first session did.
        p = self.progress
        if figure_seconds > 0:
            p.figure_share = figure_seconds / max(1, self.cfg.train.attention.every)
        p.cycle_seconds.append(round(time.monotonic() - t0 - figure_seconds + p.figure_share, 3))
        p.stop_reason = reason or ""  # saved with the checkpoint: a re-run after a kill does not train on
        if before_save is not None:
            before_save()
        self.save(best=improved, scores=scores)
        return reason

    def _validate(self) -> tuple[Optional[str], bool, dict, float]:
        """Dev loss, BLEU and figures; ``(early-stopping reason or None, improved, scores, seconds
        spent on alignment figures)``."""
        t0 = time.monotonic()
        p, tc = self.progress, self.cfg.train
        values = self.valid_loss()
        valid = self.data.valid
        n = tc.valid_max_sentences or len(valid.src)
        best = self.decode_hypotheses(valid.src[:n])
        hyps = self.data.tokenizer.decode_tgt([h.tokens for h in best])
        scores = score_corpus(hyps, valid.tgt[:n])
        values.update(bleu=scores["bleu"], chrf=scores["chrf"], bleu_lc=scores["bleu_lc"])
        improved = scores["bleu"] > p.best_bleu
        if improved:
            p.best_bleu, p.best_step, p.bad_validations = scores["bleu"], p.step, 0
        else:
            p.bad_validations += 1
        values["seconds"] = time.monotonic() - t0
        p.history.append({"step": p.step, "epoch": p.epoch, **values})
        self.monitor.scalars(p.step, {k: values[k] for k in ("loss", "ppl", "bleu", "chrf")}, "valid")
        k = min(tc.num_samples, n)
        self.monitor.text("valid/samples", samples_markdown(valid.src[:k], valid.tgt[:k], hyps[:k]), p.step)
        figure_seconds = self.log_attention(best[: tc.attention.sentences])
        self.monitor.flush()
        log.info("validation epoch %d step %d %s%s", p.epoch, p.step, format_scalars(values),
                 " (best)" if improved else "")
        scores = {**scores, "valid_loss": values["loss"], "valid_ppl": values["ppl"]}
        reason = None
        if tc.patience > 0 and p.bad_validations >= tc.patience:
            reason = f"no BLEU improvement in {tc.patience} validations (early stopping)"
        return reason, improved, scores, figure_seconds

    def _final_evaluation(self, stop_reason: str) -> dict:
        """Average checkpoints if asked, load the best, decode the test split, write results.json."""
        cfg, p = self.cfg, self.progress
        best = ckpt_io.resolve_checkpoint(self.ckpt_dir, "best")
        chosen = best.name
        from safetensors.torch import load_model as st_load

        st_load(self.model, str(best / "model.safetensors"))
        if cfg.train.average_last > 1 or cfg.train.average_best > 1:
            chosen = self._try_average() or chosen
        dev_alpha = self._tune_length_penalty(self.ckpt_dir / chosen) if cfg.train.tune_length_penalty else None
        results = {"stop_reason": stop_reason, "steps": p.step, "epochs_completed": p.epoch - 1,
                   "train_minutes": round(p.train_seconds / 60, 2), "num_params": self.num_params,
                   # throughput over the whole training wall time, validations included
                   "tgt_tokens_per_s": round(p.tgt_tokens / max(1e-9, p.train_seconds)),
                   "src_tokens_per_s": round(p.src_tokens / max(1e-9, p.train_seconds)),
                   # train.fit_schedule_to_time: the decay's length fitted when warmup ended (0 = not
                   # fitted); repeat the run elsewhere with train.max_steps=<it>
                   # train.fit_schedule_to_time=false, unless a slowdown shortened it later:
                   # [update, new end] of each shortening (nmt.train.budget.refit_schedule_steps)
                   "fitted_schedule_steps": p.schedule_steps, "schedule_refits": p.schedule_refits,
                   "checkpoint": chosen, "best_valid_bleu": p.best_bleu, "best_step": p.best_step,
                   "src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang,
                   "search": asdict(cfg.search), "length_penalty_dev_bleu": dev_alpha,
                   "world_size": self.dist.world_size, "versions": versions(), "history": p.history}
        test = self.data.test
        if cfg.train.eval_test and test is not None:
            t0 = time.monotonic()
            hyps = self.decode(test.src)
            results["test"] = {"split": cfg.data.test_split, **score_corpus(hyps, test.tgt),
                               "decode_seconds": round(time.monotonic() - t0, 1)}
            hyp_path = inside(self.run_dir, f"{cfg.data.test_split}.hyp.{cfg.data.tgt_lang}")  # names checked (R30)
            atomic_write_text(hyp_path, "".join(h + "\n" for h in hyps))
            log.info("test %s: BLEU %.2f (%s) | lowercased BLEU %.2f | chrF %.2f", cfg.data.test_split,
                     results["test"]["bleu"], results["test"]["bleu_signature"], results["test"]["bleu_lc"],
                     results["test"]["chrf"])
        atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        metrics = {"best_valid_bleu": p.best_bleu, "train_minutes": results["train_minutes"],
                   "tgt_tokens_per_s": results["tgt_tokens_per_s"]}
        if "test" in results:
            metrics.update({f"test_{k}": results["test"][k] for k in ("bleu", "bleu_lc", "chrf")})
        self.monitor.hparams(hparams_of(cfg), metrics)
        return results

    def _tune_length_penalty(self, ckpt: Path) -> dict:
        """Choose ``search.length_penalty`` on the dev set (never on test) among
        ``train.tune_length_penalty``; the choice is written into ``ckpt``'s config so that
        translation uses it. Returns ``{alpha: dev BLEU}``."""
        from nmt.config import config_to_yaml

        valid = self.data.valid
        scores = {a: score_corpus(self.decode(valid.src, length_penalty=a), valid.tgt)["bleu"]
                  for a in self.cfg.train.tune_length_penalty}
        best = max(scores, key=lambda a: (scores[a], -abs(a - self.cfg.search.length_penalty)))
        log.info("length penalty on dev: %s -> %.2f", " ".join(f"{a:g}:{b:.2f}" for a, b in scores.items()), best)
        self.cfg.search.length_penalty = best
        atomic_write_text(ckpt / "config.yaml", config_to_yaml(self.cfg))
        return {str(a): b for a, b in scores.items()}

    def _try_average(self) -> Optional[str]:
        """Average the best N checkpoints by dev BLEU (``train.average_best``) or the last N
        (``train.average_last``), as Vaswani et al. 2017 §6.1; the average is saved as
        ``averaged`` and becomes ``best`` only if its dev BLEU beats the best single checkpoint.
        Returns ``"averaged"`` when it does."""
        from nmt.train.average import average_and_keep, select_checkpoints

        tc, valid = self.cfg.train, self.data.valid
        n, by = (tc.average_best, "bleu") if tc.average_best > 1 else (tc.average_last, "last")
        try:
            paths = select_checkpoints(self.ckpt_dir, n, by, min_step=tc.validate_after_updates)
        except ValueError as err:
            log.warning("no checkpoint averaging: %s", err)
            return None
        k = tc.valid_max_sentences or len(valid.src)  # the sentences the best checkpoint was scored on
        outcome = average_and_keep(self.model, paths, lambda m: score_corpus(self.decode(valid.src[:k]), valid.tgt[:k]),
                                   self.progress.best_bleu, self.cfg, self.data.tokenizer, self.ckpt_dir, save="kept",
                                   meta={"step": self.progress.step})
        if not outcome.kept:
            return None
        self.progress.best_bleu = outcome.bleu
        return "averaged"

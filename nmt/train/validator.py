"""Validation (the trainer's ``Validator``): dev loss and perplexity, decoding with the configured
search, BLEU and chrF, the Attention tab's records and statistics, and the early-stopping
decision. Rank 0 of a distributed job validates; the loop broadcasts the outcome."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch

from nmt.attention_maps import attention_statistics, collect_attention
from nmt.config import Config
from nmt.data.dataset import BucketingSampler, TokenizedDataset, make_batch
from nmt.evaluate import score_corpus, source_limit, translate_texts, truncate_sources
from nmt.search import Hypothesis
from nmt.tensorboard.writer import Probe, make_record
from nmt.train.monitor import Monitor, format_scalars, samples_markdown
from nmt.train.state import Progress

log = logging.getLogger("nmt.train")


@dataclass
class Validation:
    """One validation's outcome: the early-stopping reason (or None), whether dev BLEU improved,
    the scores stored in the checkpoint, and the seconds spent on Images-tab figures."""

    stop_reason: Optional[str]
    improved: bool
    scores: dict
    figure_seconds: float


class Validator:
    """Dev loss, BLEU and attention of ``model`` (see the module docstring).

    Args:
        loss: ``batch -> (loss_sum, nll_sum)`` (the updater's, autocast included).
        valid_ids: the dev set's ids, truncated to the model's positions.
        probes: a ``train.attention.probe`` file's sentences, or None for the first dev sentences.
    """

    def __init__(self, cfg: Config, model: torch.nn.Module, tokenizer, valid, valid_ids: TokenizedDataset,
                 probes: Optional[list[Probe]], monitor: Monitor, device: torch.device, loss) -> None:
        self.cfg, self.model, self.tokenizer, self.valid, self.valid_ids = cfg, model, tokenizer, valid, valid_ids
        self.probes, self.monitor, self.device, self.loss = probes, monitor, device, loss

    @torch.no_grad()
    def valid_loss(self) -> dict:
        """Teacher-forced loss and perplexity on the dev set (no label smoothing in ``nll``)."""
        ds = self.valid_ids
        sampler = BucketingSampler(ds.src_lengths, ds.tgt_lengths, max_tokens=self.cfg.train.max_tokens, shuffle=False)
        self.model.eval()
        loss_sum = nll_sum = 0.0
        ntokens = 0
        for indices in sampler:
            batch = make_batch(ds, indices).to(self.device)
            loss, nll = self.loss(batch)
            loss_sum += float(loss)
            nll_sum += float(nll)
            ntokens += batch.ntokens
        return {"loss": loss_sum / ntokens, "nll": nll_sum / ntokens, "ppl": math.exp(min(50.0, nll_sum / ntokens))}

    def decode_hypotheses(self, sources: list[str], length_penalty: Optional[float] = None) -> list[Hypothesis]:
        """The best hypothesis of each source under the configured search (``length_penalty``
        overrides it); sources longer than the model's positions are truncated."""
        sc = self.cfg.search
        alpha = sc.length_penalty if length_penalty is None else length_penalty
        hyps = translate_texts(self.model, self.tokenizer, sources, beam_size=sc.beam_size, length_penalty=alpha,
                               max_len_a=sc.max_len_a, max_len_b=sc.max_len_b, batch_size=sc.batch_size,
                               need_attn=False, device=self.device)
        return [h[0] for h in hyps]

    def decode(self, sources: list[str], length_penalty: Optional[float] = None) -> list[str]:
        """:meth:`decode_hypotheses`, detokenised."""
        return self.tokenizer.decode_tgt([h.tokens for h in self.decode_hypotheses(sources, length_penalty)])

    def validate(self, progress: Progress) -> Validation:
        """Dev loss, BLEU, samples and attention; updates ``progress`` (best BLEU, patience, history)."""
        t0 = time.monotonic()
        p, tc = progress, self.cfg.train
        values = self.valid_loss()
        n = tc.valid_max_sentences or len(self.valid.src)
        best = self.decode_hypotheses(self.valid.src[:n])
        hyps = self.tokenizer.decode_tgt([h.tokens for h in best])
        scores = score_corpus(hyps, self.valid.tgt[:n])
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
        self.monitor.text("valid/samples", samples_markdown(self.valid.src[:k], self.valid.tgt[:k], hyps[:k]), p.step)
        figure_seconds = self.log_attention(best[: tc.attention.sentences], p.step, len(p.history))
        self.monitor.flush()
        log.info("validation epoch %d step %d %s%s", p.epoch, p.step, format_scalars(values), " (best)" if improved else "")
        reason = None
        if tc.patience > 0 and p.bad_validations >= tc.patience:
            reason = f"no BLEU improvement in {tc.patience} validations (early stopping)"
        return Validation(reason, improved, {**scores, "valid_loss": values["loss"], "valid_ppl": values["ppl"]},
                          figure_seconds)

    def probe_set(self) -> tuple[list[Probe], list[list[int]]]:
        """The probe sentences (a ``train.attention.probe`` file, else the first
        ``train.attention.sentences`` dev sentences) and their source ids, truncated to the
        model's positions."""
        if self.probes is not None:
            ids = self.tokenizer.encode_src([p.source for p in self.probes])
            return self.probes, truncate_sources(ids, source_limit(self.model), warn=False)
        k = min(self.cfg.train.attention.sentences, len(self.valid_ids))
        return ([Probe(self.valid.src[i], self.valid.tgt[i]) for i in range(k)],
                [list(s) for s in self.valid_ids.src[:k]])

    def log_attention(self, dev_hyps: list[Hypothesis], step: int, validations: int) -> float:
        """The Attention tab's records of the probe sentences, attention statistics, and
        (``train.attention.images``) alignment figures. ``dev_hyps`` are the search's outputs for
        the first dev sentences; teacher-forcing a hypothesis reproduces the search's attention
        for every layer and head. Failures are logged and never stop training.

        Returns:
            Seconds spent on the figures (at every ``train.attention.every``-th of the
            ``validations`` so far with ``images``; 0.0 otherwise).
        """
        ac = self.cfg.train.attention
        t0 = time.monotonic()
        values: dict[str, float] = {}
        figures, figure_seconds = 0, 0.0
        try:
            ds = self.valid_ids
            if ac.stats_sentences > 0:
                k = min(ac.stats_sentences, len(ds))
                values.update(attention_statistics(self.model, ds.src[:k], ds.tgt[:k]))
            maps = self._records(dev_hyps, step, values)
            if maps and ac.images and (validations - 1) % max(1, ac.every) == 0:
                t_fig = time.monotonic()
                figures = self._draw_figures(maps, step)
                figure_seconds = time.monotonic() - t_fig
        except Exception:  # plotting must never stop training
            log.warning("attention summaries/statistics failed at step %d; training continues", step, exc_info=True)
        values["plot_seconds"] = time.monotonic() - t0
        self.monitor.scalars(step, values, "attention")
        if figures:
            log.info("attention: %d figures and statistics in %.1f s", figures, values["plot_seconds"])
        return figure_seconds

    def _records(self, dev_hyps: list[Hypothesis], step: int, values: dict) -> list:
        """Write the probe sentences' records; returns their attention maps."""
        probes, src_ids = self.probe_set()
        hyps = dev_hyps[: len(probes)] if self.probes is None else self.decode_hypotheses([p.source for p in probes])
        keep = [i for i, ids in enumerate(src_ids) if ids]  # an empty dev line has no attention
        if not keep:
            return []
        t0 = time.monotonic()
        probes, src_ids, hyps = [probes[i] for i in keep], [src_ids[i] for i in keep], [hyps[i] for i in keep]
        maps = collect_attention(self.model, self.tokenizer, src_ids, [h.tokens for h in hyps])
        texts = self.tokenizer.decode_tgt([h.tokens for h in hyps])
        sc = self.cfg.search
        search = {"beam_size": sc.beam_size, "length_penalty": sc.length_penalty}
        records = [make_record(m, i, step, p.source, text, p.reference, h.score, search, self.cfg.model.arch, p.gold)
                   for i, m, p, h, text in zip(keep, maps, probes, hyps, texts)]
        values["summary_bytes"] = self.monitor.attention(records)
        values["summary_seconds"] = time.monotonic() - t0  # the dashboard's cost (docs/dashboard.md)
        return maps

    def _draw_figures(self, maps, step: int) -> int:
        """The Images-tab figures of the probe sentences; returns how many were drawn."""
        from nmt.viz import alignment_figures

        ac, count = self.cfg.train.attention, 0
        for i, sentence_maps in enumerate(maps):
            figs = alignment_figures(sentence_maps, f"attention/dev{i}", words=ac.words,
                                     all_layers=ac.all_layers and i < ac.layer_sentences)
            for tag, fig in figs.items():
                self.monitor.figure(tag, fig, step)
            count += len(figs)
        return count

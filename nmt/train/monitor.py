"""Training monitor: TensorBoard scalars/text and plain log lines."""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("nmt.train")


class Monitor:
    """Writes scalars and text to TensorBoard under ``<run>/tensorboard`` (created lazily)."""

    def __init__(self, logdir: Path, enabled: bool = True, purge_step: Optional[int] = None) -> None:
        """``purge_step``: on resume, events at this step or later (written after the checkpoint
        that training resumes from) are hidden from TensorBoard (RELIABILITY.md R17)."""
        self.writer = None
        self.enabled = enabled  # rank 0 of a distributed job
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        """Log ``{name: value}`` as ``prefix/name`` at ``step``."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def text(self, tag: str, text: str, step: int) -> None:
        """Markdown ``text`` in TensorBoard's Text tab under ``tag``."""
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def attention(self, records) -> int:
        """The Attention dashboard's records (:mod:`nmt.tensorboard.records`); returns the bytes
        written (0 on ranks that do not write)."""
        if self.writer is None:
            return 0
        from nmt.tensorboard.writer import write_records

        return write_records(self.writer, records)

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib figure in TensorBoard's Images tab under ``tag`` (the figure is closed)."""
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """The run's hyperparameters and final metrics for TensorBoard's HParams tab, written
        into this run's own event file (``SummaryWriter.add_hparams`` would start a second run
        directory), so runs of a sweep are compared side by side. ``hparams`` values: int,
        float, str or bool; ``metrics`` are also logged as scalars (tags ``hparams/<name>``)."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {f"hparams/{k}": float(v) for k, v in metrics.items()}
        for summary in hparams_summary(hparams, metrics):
            self.writer._get_file_writer().add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value)

    def log_train(self, epoch: int, step: int, window: dict, grad_norm: float, lr: float) -> None:
        """The training scalars of the updates since the last report (``window``: summed ``loss``,
        ``nll`` and ``tokens``, and the ``time`` it began), in TensorBoard and the log."""
        elapsed = max(1e-9, time.monotonic() - window["time"])
        tokens = max(1, window["tokens"])
        values = {"loss": window["loss"] / tokens, "nll": window["nll"] / tokens,
                  "ppl": math.exp(min(50.0, window["nll"] / tokens)), "lr": lr, "grad_norm": grad_norm,
                  "tgt_tokens_per_s": window["tokens"] / elapsed}
        self.scalars(step, values, "train")
        log.info("epoch %d step %d %s", epoch, step, format_scalars(values))

    def progress_bar(self, total: Optional[int], epoch: int, setting: Optional[bool]):
        """A tqdm bar of the epoch's batches (``setting`` None: only on a terminal), or None."""
        show = sys.stderr.isatty() if setting is None else setting
        if not show or not self.enabled:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)

    def flush(self) -> None:
        """Write pending events to disk."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()


def hparams_of(cfg) -> dict:
    """The hyperparameters a sweep usually varies, flat (``model.d_model``: 256, ...), from a
    :class:`nmt.config.Config`."""
    m, o, t, s = cfg.model, cfg.optim, cfg.train, cfg.search
    out = {"data.pair": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}", "data.vocab_size": cfg.data.tokenizer.vocab_size,
           "model.arch": m.arch, "model.encoder_layers": m.encoder_layers, "model.decoder_layers": m.decoder_layers,
           "model.dropout": m.dropout, "optim.lr": o.lr, "optim.scheduler": o.scheduler,
           "optim.warmup_steps": o.warmup_steps, "train.max_tokens": t.max_tokens, "train.update_freq": t.update_freq,
           "train.label_smoothing": t.label_smoothing, "train.seed": t.seed, "search.beam_size": s.beam_size,
           "search.length_penalty": s.length_penalty}
    if m.arch == "transformer":
        out.update({"model.d_model": m.d_model, "model.num_heads": m.num_heads, "model.ffn_dim": m.ffn_dim,
                    "model.attention_dropout": m.attention_dropout})
    else:
        out.update({"model.rnn_type": m.rnn_type, "model.hidden_size": m.hidden_size, "model.embed_dim": m.embed_dim,
                    "model.decoder.style": m.decoder.style, "model.attention.score": m.attention.score,
                    "model.attention.window": m.attention.window})
    return out


def samples_markdown(sources: list[str], references: list[str], hypotheses: list[str]) -> str:
    """A Markdown table of fixed dev sentences for TensorBoard's text panel."""
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    rows = ["| # | source | reference | hypothesis |", "|---|---|---|---|"]
    rows += [f"| {i} | {esc(s)} | {esc(r)} | {esc(h)} |" for i, (s, r, h) in
             enumerate(zip(sources, references, hypotheses))]
    return "\n".join(rows)


def format_scalars(values: dict[str, float], keys: Optional[list[str]] = None) -> str:
    """``k=v`` pairs for a log line."""
    keys = keys or list(values)
    return " ".join(f"{k}={values[k]:.4g}" if isinstance(values[k], float) else f"{k}={values[k]}" for k in keys)

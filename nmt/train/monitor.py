"""Training monitor: TensorBoard scalars/text and plain log lines."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

log = logging.getLogger("nmt.train")


class Monitor:
    """Writes scalars and text to TensorBoard under ``<run>/tensorboard`` (created lazily)."""

    def __init__(self, logdir: Path, enabled: bool = True, purge_step: Optional[int] = None) -> None:
        """``purge_step``: on resume, events at this step or later (written after the checkpoint
        that training resumes from) are hidden from TensorBoard (RELIABILITY.md R17)."""
        self.writer = None
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

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib figure in TensorBoard's Images tab under ``tag`` (the figure is closed)."""
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def flush(self) -> None:
        """Write pending events to disk."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()


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

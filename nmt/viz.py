"""Alignment matrices -> labelled heatmap figures (matplotlib, Agg backend) and text heatmaps.

Rows are target tokens (y axis, top to bottom), columns are source tokens (x axis), as in
Bahdanau et al. (2015) fig. 3 transposed to read like a sentence pair: each row is one
output token's attention distribution, so every row sums to one (checked before drawing).
matplotlib is imported lazily: translating without plots never loads it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from torch import Tensor

from nmt.alignment import merge_subwords
from nmt.attention_maps import AttentionMaps

ROW_SUM_TOLERANCE = 1e-3
ASCII_RAMP = " .:-=+*#%@"
MAX_CELLS = 80  # longer sentences are drawn with smaller labels, never cropped


def check_rows(matrix: Tensor, what: str = "attention") -> None:
    """Raise ValueError unless every row of ``(..., T, S)`` sums to one (within 1e-3)."""
    sums = matrix.detach().float().sum(-1)
    worst = float((sums - 1).abs().max()) if sums.numel() else 0.0
    if worst > ROW_SUM_TOLERANCE:
        raise ValueError(f"{what}: rows must sum to one before plotting (largest deviation {worst:.2e})")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _font(n: int) -> float:
    return max(4.0, min(10.0, 220.0 / max(n, 1)))


def _draw(ax, matrix: Tensor, src_labels: Sequence[str], tgt_labels: Sequence[str], title: str,
          positions: Optional[Tensor] = None, window_size: Optional[int] = None, y_labels: bool = True):
    m = matrix.detach().float().cpu().numpy()
    image = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(src_labels)))
    ax.set_xticklabels(src_labels, rotation=90, fontsize=_font(len(src_labels)))
    if y_labels:
        ax.set_yticks(range(len(tgt_labels)))
        ax.set_yticklabels(tgt_labels, fontsize=_font(len(tgt_labels)))
    else:
        ax.set_yticks([])
    if positions is not None:
        rows = range(len(positions))
        p = positions.detach().float().cpu().numpy()
        ax.plot(p, rows, color="red", linewidth=1.2, marker="o", markersize=2, label="p_t")
        if window_size is not None:
            ax.plot(p - window_size, rows, color="red", linewidth=0.8, linestyle="--", label="p_t ± D")
            ax.plot(p + window_size, rows, color="red", linewidth=0.8, linestyle="--")
        ax.set_xlim(-0.5, m.shape[1] - 0.5)
        ax.legend(loc="lower left", fontsize=6, framealpha=0.6)
    return image


def heatmap(matrix: Tensor, src_labels: Sequence[str], tgt_labels: Sequence[str], title: str = "",
            positions: Optional[Tensor] = None, window_size: Optional[int] = None):
    """One labelled heatmap with a colour bar.

    Args:
        matrix: ``(T, S)`` weights whose rows sum to one.
        src_labels: S x-axis labels; tgt_labels: T y-axis labels.
        positions: ``(T,)`` local-attention centres p_t drawn as a red line, with the window
            edges p_t ± ``window_size`` dashed.
    Returns:
        A matplotlib Figure (the caller closes it; TensorBoard's ``add_figure`` does).
    Raises:
        ValueError: rows that do not sum to one, or labels that do not match the shape.
    """
    _check_labels(matrix, src_labels, tgt_labels)
    check_rows(matrix, title or "heatmap")
    plt = _pyplot()
    rows, cols = matrix.shape
    width = min(14.0, 2.0 + 0.28 * min(cols, MAX_CELLS))
    height = min(14.0, 1.6 + 0.28 * min(rows, MAX_CELLS))
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    image = _draw(ax, matrix, src_labels, tgt_labels, title, positions, window_size)
    _margins(fig, src_labels, tgt_labels, width, height)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    return fig


def _margins(fig, src_labels: Sequence[str], tgt_labels: Sequence[str], width: float, height: float) -> None:
    """Room for the rotated labels, computed from their length (cheaper than ``tight_layout``,
    which draws the figure an extra time)."""
    char = 0.075  # inches per character at the label font sizes used here
    left = min(0.45, (0.3 + char * max((len(t) for t in tgt_labels), default=1)) / width)
    bottom = min(0.45, (0.3 + char * max((len(s) for s in src_labels), default=1)) / height)
    # right: room for the colour bar's tick labels ("0.8" at 8 pt is about 0.25 in past the bar)
    fig.subplots_adjust(left=left, bottom=bottom, right=1 - 0.65 / width, top=1 - 0.55 / height)


def head_grid(weights: Tensor, src_labels: Sequence[str], tgt_labels: Sequence[str], title: str = ""):
    """All heads of one layer side by side, with one shared colour bar.

    Args:
        weights: ``(H, T, S)`` with rows summing to one.
    Returns:
        A matplotlib Figure with H panels (at most 4 per row); labels on the outer panels.
    Raises:
        ValueError: rows that do not sum to one, or labels that do not match the shape.
    """
    _check_labels(weights, src_labels, tgt_labels)
    check_rows(weights, title or "heads")
    plt = _pyplot()
    heads, rows, cols = weights.shape
    ncols = min(heads, 4)
    nrows = math.ceil(heads / ncols)
    panel_w = min(7.0, 1.2 + 0.2 * min(cols, MAX_CELLS))
    panel_h = min(7.0, 1.0 + 0.2 * min(rows, MAX_CELLS))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols + 0.8, panel_h * nrows + 0.5), dpi=100,
                             squeeze=False)
    image = None
    for h in range(nrows * ncols):
        ax = axes[h // ncols][h % ncols]
        if h >= heads:
            ax.axis("off")
            continue
        image = _draw(ax, weights[h], src_labels, tgt_labels, f"head {h}", y_labels=h % ncols == 0)
    fig.suptitle(title, fontsize=10)
    width, height = fig.get_size_inches()
    _margins(fig, src_labels, tgt_labels, width, height)
    fig.subplots_adjust(wspace=0.08, hspace=0.35, right=0.9)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    return fig


def _check_labels(matrix: Tensor, src_labels: Sequence[str], tgt_labels: Sequence[str]) -> None:
    if tuple(matrix.shape[-2:]) != (len(tgt_labels), len(src_labels)):
        raise ValueError(f"matrix of shape {tuple(matrix.shape)} does not match {len(tgt_labels)} target and "
                         f"{len(src_labels)} source labels")


def alignment_figures(maps: AttentionMaps, name: str, words: bool = True, all_layers: bool = True) -> dict:
    """The figures of one sentence pair, keyed by TensorBoard tag.

    * ``{name}/alignment``: head average of the alignment layer in pieces (RNN: the single
      matrix with p_t and the window edges for local attention); ``{name}/alignment_words``:
      the same merged into words (:func:`~nmt.alignment.merge_subwords`).
    * with ``all_layers``: ``{name}/cross_layer<i>`` (a grid of all heads), and for a
      Transformer ``{name}/encoder_self_layer<i>`` and ``{name}/decoder_self_layer<i>``.
    """
    src, tgt = maps.src_pieces, maps.tgt_pieces
    layer = maps.alignment_layer
    average = maps.alignment()
    heads = maps.cross[layer].size(0)
    title = f"cross-attention, layer {layer}" + (f", mean of {heads} heads" if heads > 1 else "")
    figs = {f"{name}/alignment": heatmap(average, src, tgt, title, maps.positions, maps.window_size)}
    if words:
        merged, tgt_words, src_words = merge_subwords(average, tgt, src)
        figs[f"{name}/alignment_words"] = heatmap(merged, src_words, tgt_words, title + " (words)")
    if all_layers and heads > 1:
        for i, w in enumerate(maps.cross):
            figs[f"{name}/cross_layer{i}"] = head_grid(w, src, tgt, f"decoder layer {i}: cross-attention")
        for i, w in enumerate(maps.encoder_self):
            figs[f"{name}/encoder_self_layer{i}"] = head_grid(w, src, src, f"encoder layer {i}: self-attention")
        for i, w in enumerate(maps.decoder_self):
            figs[f"{name}/decoder_self_layer{i}"] = head_grid(w, ["<s>"] + tgt[:-1], tgt,
                                                              f"decoder layer {i}: self-attention")
    return figs


def ascii_heatmap(matrix: Tensor, src_labels: Sequence[str], tgt_labels: Sequence[str],
                  label_width: int = 12) -> str:
    """A compact character heatmap (one character per cell, `` .:-=+*#%@`` from 0 to 1) for a
    terminal. Source labels are written vertically above the columns.

    Raises:
        ValueError: labels that do not match the shape.
    """
    _check_labels(matrix, src_labels, tgt_labels)
    m = matrix.detach().float().clamp(0, 1)
    levels = (m * (len(ASCII_RAMP) - 1)).round().long()
    height = min(label_width, max((len(s) for s in src_labels), default=0))
    lines = []
    for r in range(height):
        lines.append(" " * (label_width + 1) + "".join(s[r] if r < len(s) else " " for s in src_labels))
    for j, label in enumerate(tgt_labels):
        cells = "".join(ASCII_RAMP[int(v)] for v in levels[j])
        lines.append(f"{label[:label_width]:>{label_width}} {cells}")
    return "\n".join(lines)


def figure_to_png(fig, path) -> None:
    """Save ``fig`` as a PNG file atomically (the figure stays open)."""
    import io

    from nmt.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def write_attention(maps: Sequence[AttentionMaps], names: Sequence[str], logdir: Optional[str] = None,
                    png_dir: Optional[str] = None, ascii_stream=None, words: bool = True,
                    all_layers: bool = True) -> int:
    """Write the figures of several sentence pairs (``nmt-translate attention.*``).

    Args:
        maps: one :class:`AttentionMaps` per sentence; names: the tag prefix of each.
        logdir: a TensorBoard log directory (figures at step 0, Images tab).
        png_dir: a directory for ``<name>_<figure>.png`` files (created if missing).
        ascii_stream: a text stream (e.g. ``sys.stderr``) for character heatmaps of the
            alignment (word-level when ``words``).
    Returns:
        The number of figures written.
    """
    from pathlib import Path

    writer = None
    if logdir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(logdir)
    if png_dir:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        for m, name in zip(maps, names):
            if ascii_stream is not None:
                matrix, tgt, src = m.alignment(), m.tgt_pieces, m.src_pieces
                if words:
                    matrix, tgt, src = merge_subwords(matrix, tgt, src)
                ascii_stream.write(f"{name}:\n{ascii_heatmap(matrix, src, tgt)}\n\n")
            if writer is None and not png_dir:
                continue
            for tag, fig in alignment_figures(m, name, words=words, all_layers=all_layers).items():
                count += 1
                if png_dir:
                    figure_to_png(fig, Path(png_dir) / (tag.replace("/", "_") + ".png"))
                if writer is not None:
                    writer.add_figure(tag, fig, 0, close=True)
                else:
                    _pyplot().close(fig)
    finally:
        if writer is not None:
            writer.close()
    return count


// The numbers behind every view, computed from a record's float matrices. The word merge, the
// argmax links and AER follow nmt.alignment (merge_subwords, hard_alignment,
// alignment_error_rate) so the tab shows what nmt-align computes.

export const WORD_START = '\u2581';
export const SPECIAL = new Set(['</s>', '<s>', '<pad>', '<unk>']);

/** Row and column labels and word spans of a kind: cross is target x source, self is X x X. */
export function axes(meta, kind) {
  const src = {labels: meta.src_pieces, spans: meta.src_words};
  const tgt = {labels: meta.tgt_pieces, spans: meta.tgt_words};
  if (kind === 'encoder_self') return {rows: src, cols: src};
  if (kind === 'decoder_self') return {rows: tgt, cols: tgt};
  return {rows: tgt, cols: src};
}

/**
 * The (X, Y) matrix of one layer and head ('mean' and 'max' over the heads) of a kind.
 * @return {{values: Float32Array, rows: number, cols: number, rowLabels: string[], colLabels: string[],
 *           rowSpans: number[][], colSpans: number[][]}}
 */
export function select(record, kind, layer, head) {
  const m = record.matrices[kind];
  const [, H, X, Y] = m.shape;
  const size = X * Y;
  const values = new Float32Array(size);
  const heads = head === 'mean' || head === 'max' ? [...Array(H).keys()] : [Number(head)];
  for (const h of heads) {
    const offset = (layer * H + h) * size;
    for (let i = 0; i < size; i++) {
      const v = m.data[offset + i];
      if (head === 'max') values[i] = h === 0 ? v : Math.max(values[i], v);
      else values[i] += head === 'mean' ? v / H : v;
    }
  }
  const {rows, cols} = axes(record.meta, kind);
  return {values, rows: X, cols: Y, rowLabels: rows.labels, colLabels: cols.labels, rowSpans: rows.spans,
          colSpans: cols.spans};
}

function joinPieces(labels, spans) {
  return spans.map((span) => span.map((k) => labels[k]).join('').split(WORD_START).join('') || WORD_START);
}

/** Pieces merged into words: a word's columns summed, its rows averaged (rows still sum to one). */
export function toWords(view) {
  const R = view.rowSpans.length;
  const C = view.colSpans.length;
  const values = new Float32Array(R * C);
  view.rowSpans.forEach((rowSpan, r) => {
    view.colSpans.forEach((colSpan, c) => {
      let total = 0;
      for (const i of rowSpan) for (const j of colSpan) total += view.values[i * view.cols + j];
      values[r * C + c] = total / rowSpan.length;
    });
  });
  const single = (n) => [...Array(n).keys()].map((k) => [k]);
  return {values, rows: R, cols: C, rowLabels: joinPieces(view.rowLabels, view.rowSpans),
          colLabels: joinPieces(view.colLabels, view.colSpans), rowSpans: single(R), colSpans: single(C),
          pieceRowSpans: view.rowSpans, pieceColSpans: view.colSpans};
}

/** Each row linked to its most attended column, special tokens never linked: [[col, row], ...]. */
export function argmaxLinks(view) {
  const links = [];
  for (let r = 0; r < view.rows; r++) {
    if (SPECIAL.has(view.rowLabels[r])) continue;
    let best = -1;
    let bestValue = -Infinity;
    for (let c = 0; c < view.cols; c++) {
      if (SPECIAL.has(view.colLabels[c])) continue;
      const v = view.values[r * view.cols + c];
      if (v > bestValue) {
        bestValue = v;
        best = c;
      }
    }
    if (best >= 0) links.push([best, r]);
  }
  return links;
}

/** Mean row entropy in nats (Shannon; 0 log 0 = 0). */
export function entropy(view) {
  let total = 0;
  for (let r = 0; r < view.rows; r++) {
    for (let c = 0; c < view.cols; c++) {
      const p = view.values[r * view.cols + c];
      if (p > 0) total -= p * Math.log(p);
    }
  }
  return view.rows ? total / view.rows : 0;
}

/** Alignment error rate (Och & Ney 2003) of word links [[i, j]] against {sure, possible}; null when undefined. */
export function aer(links, gold) {
  const key = ([i, j]) => `${i}-${j}`;
  const sure = new Set(gold.sure.map(key));
  const possible = new Set([...gold.possible.map(key), ...sure]);
  const a = links.map(key);
  if (a.length + sure.size === 0) return null;
  const aS = a.filter((k) => sure.has(k)).length;
  const aP = a.filter((k) => possible.has(k)).length;
  return 1 - (aS + aP) / (a.length + sure.size);
}

/** a - b cell by cell, or null when the shapes differ. */
export function difference(a, b) {
  if (!a || !b || a.rows !== b.rows || a.cols !== b.cols) return null;
  const values = new Float32Array(a.values.length);
  for (let i = 0; i < values.length; i++) values[i] = a.values[i] - b.values[i];
  return {...a, values, signed: true};
}

/** The matrix as CSV: a header of column labels, then one row per row label. */
export function toCSV(view) {
  const quote = (s) => `"${String(s).replace(/"/g, '""')}"`;
  const lines = [['', ...view.colLabels].map(quote).join(',')];
  for (let r = 0; r < view.rows; r++) {
    const cells = [];
    for (let c = 0; c < view.cols; c++) cells.push(view.values[r * view.cols + c].toFixed(6));
    lines.push([quote(view.rowLabels[r]), ...cells].join(','));
  }
  return lines.join('\n') + '\n';
}

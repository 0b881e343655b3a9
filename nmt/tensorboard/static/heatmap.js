// The heatmap: rows are target tokens, columns source tokens (or X x X for self-attention), one
// cell per weight, labelled axes, hover read-out, a pinned row, link overlays. Drawn on a canvas
// (one pixel per cell, scaled), so 100 x 100 tokens stay fast; exportable as PNG and SVG.

import {cellImage, diverging, viridis} from './colors.js';

const FONT = '11px system-ui, sans-serif';

export class Heatmap {
  /**
   * @param {HTMLElement} host where the canvas and the read-out go
   * @param {{onPin: function(?number)}} callbacks
   */
  constructor(host, {onPin = () => {}, maxWidth = 900} = {}) {
    this.host = host;
    this.maxWidth = maxWidth;
    this.onPin = onPin;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'heatmap';
    this.readout = document.createElement('div');
    this.readout.className = 'readout';
    this.readout.textContent = 'hover a cell';
    host.append(this.canvas, this.readout);
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => this.hover(null));
    this.canvas.addEventListener('click', (e) => this.click(e));
    this.view = null;
  }

  layout(view) {
    const ctx = this.canvas.getContext('2d');
    ctx.font = FONT;
    const widest = (labels) => Math.max(20, ...labels.map((l) => ctx.measureText(l).width));
    const left = Math.min(160, widest(view.rowLabels) + 10);
    const top = Math.min(160, widest(view.colLabels) * 0.75 + 12);
    const cell = Math.max(4, Math.min(36, Math.floor((this.maxWidth - left - 10) / Math.max(1, view.cols))));
    return {left, top, cell, width: left + cell * view.cols + 10, height: top + cell * view.rows + 10};
  }

  /**
   * @param view a matrix from math.js (values, rows, cols, labels)
   * @param {{links?: number[][], gold?: {sure: number[][], possible: number[][]}, goldSpans?: object,
   *          positions?: number[], window?: number, pinned?: ?number, signed?: boolean}} options
   */
  draw(view, options = {}) {
    this.view = view;
    this.options = options;
    const box = (this.box = this.layout(view));
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(box.width * ratio);
    this.canvas.height = Math.round(box.height * ratio);
    this.canvas.style.width = `${box.width}px`;
    this.canvas.style.height = `${box.height}px`;
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, box.width, box.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(cellImage(view, {signed: options.signed}), box.left, box.top, box.cell * view.cols,
                  box.cell * view.rows);
    this.labels(ctx, view, box);
    this.overlays(ctx, view, box, options);
  }

  labels(ctx, view, box) {
    ctx.fillStyle = '#222';
    ctx.font = FONT;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    view.rowLabels.forEach((label, r) => {
      ctx.fillStyle = this.options.pinned === r ? '#c00' : '#222';
      ctx.fillText(label, box.left - 5, box.top + (r + 0.5) * box.cell);
    });
    ctx.fillStyle = '#222';
    view.colLabels.forEach((label, c) => {
      ctx.save();
      ctx.translate(box.left + (c + 0.5) * box.cell, box.top - 5);
      ctx.rotate(-Math.PI / 3);
      ctx.textAlign = 'left';
      ctx.fillText(label, 0, 0);
      ctx.restore();
    });
  }

  overlays(ctx, view, box, {links, gold, positions, window: D, pinned}) {
    const x = (c) => box.left + c * box.cell;
    const y = (r) => box.top + r * box.cell;
    if (pinned !== undefined && pinned !== null) {
      ctx.strokeStyle = '#e00';
      ctx.lineWidth = 2;
      ctx.strokeRect(x(0), y(pinned), box.cell * view.cols, box.cell);
    }
    for (const [kind, color, dash] of [['possible', '#ff9800', [3, 2]], ['sure', '#e91e63', []]]) {
      for (const cells of (gold && gold[kind]) || []) {
        ctx.strokeStyle = color;
        ctx.setLineDash(dash);
        ctx.lineWidth = 2;
        ctx.strokeRect(x(cells.c0) + 1, y(cells.r0) + 1, (cells.c1 - cells.c0) * box.cell - 2,
                       (cells.r1 - cells.r0) * box.cell - 2);
      }
    }
    ctx.setLineDash([]);
    for (const [c, r] of links || []) {
      ctx.fillStyle = '#fff';
      ctx.beginPath();
      ctx.arc(x(c + 0.5), y(r + 0.5), Math.max(1.5, box.cell / 6), 0, 2 * Math.PI);
      ctx.fill();
    }
    if (positions) {
      ctx.strokeStyle = '#f44336';
      ctx.fillStyle = '#f44336';
      positions.forEach((p, r) => {
        if (r >= view.rows) return;
        ctx.fillRect(x(p + 0.5) - 2, y(r + 0.5) - 2, 4, 4);
        if (D) {
          ctx.strokeRect(x(Math.max(0, p - D)), y(r) + 1, box.cell * (Math.min(view.cols, p + D + 1) - Math.max(0, p - D)),
                         box.cell - 2);
        }
      });
    }
  }

  /** The cell under a mouse event, or null. */
  cellAt(event) {
    if (!this.view || !event) return null;
    const rect = this.canvas.getBoundingClientRect();
    const c = Math.floor((event.clientX - rect.left - this.box.left) / this.box.cell);
    const r = Math.floor((event.clientY - rect.top - this.box.top) / this.box.cell);
    return r >= 0 && c >= 0 && r < this.view.rows && c < this.view.cols ? {r, c} : null;
  }

  /** The centre of a cell in page coordinates relative to the canvas (for tests and tooltips). */
  cellCenter(r, c) {
    return {x: this.box.left + (c + 0.5) * this.box.cell, y: this.box.top + (r + 0.5) * this.box.cell};
  }

  hover(event) {
    const cell = this.cellAt(event);
    const el = this.readout;
    if (!cell) {
      el.textContent = 'hover a cell';
      delete el.dataset.weight;
      return;
    }
    const v = this.view;
    const weight = v.values[cell.r * v.cols + cell.c];
    el.dataset.row = cell.r;
    el.dataset.col = cell.c;
    el.dataset.target = v.rowLabels[cell.r];
    el.dataset.source = v.colLabels[cell.c];
    el.dataset.weight = weight.toFixed(6);
    el.textContent = `${v.rowLabels[cell.r]} \u2192 ${v.colLabels[cell.c]}: ${weight.toFixed(4)}`;
  }

  click(event) {
    const cell = this.cellAt(event);
    const rect = this.canvas.getBoundingClientRect();
    const onLabel = event.clientX - rect.left < this.box.left;
    const r = cell ? cell.r : onLabel ? Math.floor((event.clientY - rect.top - this.box.top) / this.box.cell) : null;
    this.onPin(r !== null && r >= 0 && r < this.view.rows && r !== this.options.pinned ? r : null);
  }

  /** The current drawing as PNG. */
  png() {
    return new Promise((resolve) => this.canvas.toBlob(resolve, 'image/png'));
  }

  /** The current matrix as an SVG document (a rectangle per cell, text labels). */
  svg() {
    const v = this.view;
    const b = this.box;
    const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const color = this.options.signed ? diverging : viridis;
    const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${b.width}" height="${b.height}" ` +
                   `font-family="sans-serif" font-size="11">`];
    for (let r = 0; r < v.rows; r++) {
      for (let c = 0; c < v.cols; c++) {
        const [R, G, B] = color(v.values[r * v.cols + c]);
        parts.push(`<rect x="${b.left + c * b.cell}" y="${b.top + r * b.cell}" width="${b.cell}" ` +
                   `height="${b.cell}" fill="rgb(${R},${G},${B})"/>`);
      }
      parts.push(`<text x="${b.left - 5}" y="${b.top + (r + 0.5) * b.cell}" text-anchor="end" ` +
                 `dominant-baseline="middle">${esc(v.rowLabels[r])}</text>`);
    }
    v.colLabels.forEach((label, c) => {
      const x = b.left + (c + 0.5) * b.cell;
      parts.push(`<text transform="translate(${x},${b.top - 5}) rotate(-60)">${esc(label)}</text>`);
    });
    parts.push('</svg>');
    return parts.join('\n');
  }
}

// Link view: source tokens in one row, target tokens in another, a line per pair whose opacity is
// the weight (the view BertViz made familiar). Hovering a token keeps only its lines.

const FONT = '12px system-ui, sans-serif';

export class LinkView {
  constructor(host, {width = 900} = {}) {
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'links';
    this.width = width;
    host.append(this.canvas);
    this.focus = null;
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => {
      this.focus = null;
      this.draw(this.view);
    });
  }

  positions(count) {
    const step = (this.width - 40) / Math.max(1, count);
    return [...Array(count).keys()].map((i) => 20 + (i + 0.5) * step);
  }

  draw(view) {
    if (!view) return;
    this.view = view;
    const height = 170;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = this.width * ratio;
    this.canvas.height = height * ratio;
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${height}px`;
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, this.width, height);
    const xs = this.positions(view.cols);
    const xt = this.positions(view.rows);
    this.rows = {source: {y: 24, xs}, target: {y: height - 20, xs: xt}};
    for (let r = 0; r < view.rows; r++) {
      for (let c = 0; c < view.cols; c++) {
        if (this.focus && !(this.focus.side === 'target' ? this.focus.index === r : this.focus.index === c)) continue;
        const w = view.values[r * view.cols + c];
        if (w < 0.01) continue;
        ctx.strokeStyle = `rgba(33, 102, 172, ${Math.min(1, w)})`;
        ctx.lineWidth = 1 + 3 * w;
        ctx.beginPath();
        ctx.moveTo(xs[c], 32);
        ctx.lineTo(xt[r], height - 32);
        ctx.stroke();
      }
    }
    ctx.font = FONT;
    ctx.textAlign = 'center';
    ctx.fillStyle = '#222';
    view.colLabels.forEach((label, c) => ctx.fillText(label, xs[c], 18));
    view.rowLabels.forEach((label, r) => ctx.fillText(label, xt[r], height - 6));
  }

  hover(event) {
    if (!this.view) return;
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const side = y < 40 ? 'source' : y > this.rows.target.y - 20 ? 'target' : null;
    let focus = null;
    if (side) {
      const xs = this.rows[side].xs;
      const index = xs.reduce((best, v, i) => (Math.abs(v - x) < Math.abs(xs[best] - x) ? i : best), 0);
      focus = {side, index};
    }
    if (JSON.stringify(focus) !== JSON.stringify(this.focus)) {
      this.focus = focus;
      this.draw(this.view);
    }
  }
}

// Head grid: small multiples of every layer x head of one kind, with each head's mean row
// entropy (nats) and, when the sentence has gold links, its AER; the best head is marked
// (lowest AER, else lowest entropy: the most focused). Clicking a panel opens it in the heatmap.

import {cellImage} from './colors.js';
import {aer, argmaxLinks, entropy, select, toWords} from './math.js';

export function headGrid(host, record, kind, {selected, onSelect, size = 84} = {}) {
  host.textContent = '';
  const [L, H] = record.matrices[kind].shape;
  const gold = kind === 'cross' ? record.meta.gold : null;
  const panels = [];
  for (let layer = 0; layer < L; layer++) {
    for (let head = 0; head < H; head++) {
      const view = select(record, kind, layer, head);
      const score = gold ? aer(argmaxLinks(toWords(view)), gold) : null;
      panels.push({layer, head, view, entropy: entropy(view), aer: score});
    }
  }
  const key = (p) => (gold ? p.aer ?? Infinity : p.entropy);
  const best = panels.reduce((a, b) => (key(b) < key(a) ? b : a), panels[0]);
  const table = document.createElement('div');
  table.className = 'head-grid';
  table.style.gridTemplateColumns = `repeat(${H}, ${size + 8}px)`;
  for (const p of panels) {
    const cell = document.createElement('figure');
    cell.className = 'head-panel';
    cell.dataset.layer = p.layer;
    cell.dataset.head = p.head;
    if (p === best) cell.classList.add('best');
    if (selected && selected.layer === p.layer && String(selected.head) === String(p.head)) {
      cell.classList.add('selected');
    }
    const canvas = document.createElement('canvas');
    const scale = Math.max(1, Math.floor(size / Math.max(p.view.rows, p.view.cols)));
    canvas.width = p.view.cols * scale;
    canvas.height = p.view.rows * scale;
    canvas.style.width = `${Math.min(size, canvas.width)}px`;
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(cellImage(p.view), 0, 0, canvas.width, canvas.height);
    const caption = document.createElement('figcaption');
    caption.textContent = `L${p.layer} H${p.head} \u00b7 H=${p.entropy.toFixed(2)}` +
        (p.aer === null ? '' : ` \u00b7 AER ${p.aer.toFixed(2)}`) + (p === best ? ' \u2605' : '');
    cell.append(canvas, caption);
    cell.addEventListener('click', () => onSelect(p.layer, p.head));
    table.append(cell);
  }
  host.append(table);
  return {panels: panels.length, best: {layer: best.layer, head: best.head}};
}

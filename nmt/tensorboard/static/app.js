// The Attention tab: one page of controls over the views. State lives here; every change of a
// control redraws through update(), which is timed with the Performance API ("nmt:<control>").

import * as api from './api.js';
import {headGrid} from './grid.js';
import {Heatmap} from './heatmap.js';
import {LinkView} from './links.js';
import {argmaxLinks, difference, select, toCSV, toWords} from './math.js';

const KIND_NAMES = {cross: 'cross-attention', encoder_self: 'encoder self-attention',
                    decoder_self: 'decoder self-attention'};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

function labelled(text, control) {
  return el('label', {className: 'control'}, el('span', {textContent: text}), control);
}

function fillSelect(select, options, value) {
  select.textContent = '';
  for (const [v, text] of options) select.append(el('option', {value: String(v), textContent: text}));
  if (value !== undefined && options.some(([v]) => String(v) === String(value))) select.value = String(value);
}

export class App {
  constructor(root) {
    this.root = root;
    this.state = {run: null, sentence: null, step: null, kind: 'cross', layer: 0, head: 'mean', unit: 'pieces',
                  links: true, gold: true, pinned: null, compare: 'none', compareRun: null, compareStep: null};
    this.sentences = [];
    this.record = null;
    this.build();
  }

  build() {
    const c = (this.controls = {
      run: el('select', {onchange: () => this.change('run', () => this.loadRun(c.run.value))}),
      kind: el('select', {onchange: () => this.change('kind', () => this.setState({kind: c.kind.value, pinned: null}))}),
      layer: el('select', {onchange: () => this.change('layer', () => this.setState({layer: Number(c.layer.value)}))}),
      head: el('select', {onchange: () => this.change('head', () => this.setState({head: c.head.value}))}),
      unit: el('select', {onchange: () => this.change('unit', () => this.setState({unit: c.unit.value, pinned: null}))}),
      links: el('input', {type: 'checkbox', checked: true,
                          onchange: () => this.change('overlay', () => this.setState({links: c.links.checked}))}),
      gold: el('input', {type: 'checkbox', checked: true,
                         onchange: () => this.change('overlay', () => this.setState({gold: c.gold.checked}))}),
      step: el('input', {type: 'range', min: 0, max: 0, step: 1, value: 0,
                         oninput: () => this.change('step', () => this.setStep(Number(c.step.value)))}),
      stepLabel: el('span', {className: 'step-label'}),
      play: el('button', {textContent: '\u25b6 play', onclick: () => this.togglePlay()}),
      compare: el('select', {onchange: () => this.change('compare', () => this.setCompare(c.compare.value))}),
    });
    fillSelect(c.unit, [['pieces', 'pieces'], ['words', 'words']], 'pieces');
    const exports = ['png', 'svg', 'csv', 'json'].map((kind) => el('button', {
      className: 'export', textContent: kind.toUpperCase(), dataset: {kind}, onclick: (e) => this.export(kind, e.target)}));
    this.sentenceList = el('div', {className: 'sentences'});
    this.texts = el('div', {className: 'texts'});
    this.mainA = el('div', {className: 'panel'});
    this.mainB = el('div', {className: 'panel compare'});
    this.mainDiff = el('div', {className: 'panel compare'});
    this.heatmap = new Heatmap(this.mainA, {onPin: (r) => this.change('pin', () => this.setState({pinned: r}))});
    this.heatmapB = new Heatmap(this.mainB, {maxWidth: 600});
    this.heatmapDiff = new Heatmap(this.mainDiff, {maxWidth: 600});
    this.linkHost = el('div', {className: 'panel'});
    this.links = new LinkView(this.linkHost);
    this.grid = el('div', {className: 'grid'});
    this.message = el('div', {className: 'message'});
    this.root.append(
      el('header', {}, el('h1', {textContent: 'Attention'}), labelled('run', c.run), labelled('compare with', c.compare),
         this.message),
      el('section', {className: 'top'}, this.sentenceList, el('div', {className: 'controls'},
         labelled('kind', c.kind), labelled('layer', c.layer), labelled('head', c.head), labelled('units', c.unit),
         labelled('argmax links', c.links), labelled('gold links', c.gold),
         el('div', {className: 'stepper'}, labelled('step', c.step), c.stepLabel, c.play),
         el('div', {className: 'exports'}, el('span', {textContent: 'export '}), ...exports))),
      this.texts,
      el('section', {className: 'views'},
         el('div', {className: 'heatmaps'}, this.mainA, this.mainB, this.mainDiff),
         el('h2', {textContent: 'links'}), this.linkHost,
         el('h2', {textContent: 'every layer and head'}), this.grid));
  }

  /** Run a state change and time it (first paint, then "nmt:<control>" for each change). */
  async change(name, action) {
    const start = performance.now();
    try {
      await action();
      this.message.textContent = '';
    } catch (err) {
      this.message.textContent = String(err.message || err);
      throw err;
    } finally {
      performance.measure(`nmt:${name}`, {start, end: performance.now()});
    }
  }

  /** @param runsRequest the ``/runs`` response, already on its way (see index.js) */
  async start(runsRequest) {
    const {runs} = await runsRequest;
    performance.mark('nmt:runs-loaded');
    if (!runs.length) {
      this.message.textContent = 'No attention records: train with nmt-train, or write some with ' +
          'nmt-translate attention.logdir=DIR, then point tensorboard --logdir at them.';
      return;
    }
    this.runs = runs;
    // the run with the most logged steps first: a training run rather than one nmt-translate call
    const main = runs.reduce((a, b) => (b.steps.length > a.steps.length ? b : a), runs[0]);
    if (main.first_record) api.prime(main.first_record);
    fillSelect(this.controls.run, runs.map((r) => [r.run, `${r.run} (${r.sentences} sentences)`]), main.run);
    await this.loadRun(main.run, main.sentences_list);
    performance.measure('nmt:first-paint', {start: 0, end: performance.now()});
    document.body.dataset.ready = '1';
  }

  async loadRun(run, sentences = null) {
    this.state.run = run;
    this.sentences = sentences || await api.sentences(run);
    this.sentenceList.textContent = '';
    const table = el('table', {}, el('tr', {}, ...['#', 'source', 'chrF', 'len'].map((h) => el('th', {textContent: h}))));
    for (const s of this.sentences) {
      table.append(el('tr', {dataset: {sentence: s.sentence}, onclick: () => this.change('sentence', () =>
        this.loadSentence(s.sentence))},
      el('td', {textContent: s.sentence}), el('td', {textContent: s.source}),
      el('td', {textContent: s.chrf === null || s.chrf === undefined ? '\u2013' : s.chrf.toFixed(1)}),
      el('td', {textContent: s.length})));
    }
    this.sentenceList.append(table);
    this.fillCompare();
    await this.loadSentence(this.sentences[0].sentence, true);
  }

  get steps() {
    const s = this.sentences.find((x) => x.sentence === this.state.sentence);
    return s ? s.steps : [];
  }

  async loadSentence(sentence, fresh = false) {
    this.state.sentence = sentence;
    for (const row of this.sentenceList.querySelectorAll('tr[data-sentence]')) {
      row.classList.toggle('selected', Number(row.dataset.sentence) === sentence);
    }
    const steps = this.steps;
    const step = steps.includes(this.state.step) ? this.state.step : steps[steps.length - 1];
    Object.assign(this.controls.step, {max: steps.length - 1, value: steps.indexOf(step)});
    await this.loadRecord(step, fresh);
  }

  async setStep(index) {
    this.stopPlay(index);
    await this.loadRecord(this.steps[index]);
  }

  async loadRecord(step, fresh = false) {
    this.state.step = step;
    this.controls.stepLabel.textContent = `step ${step} (${this.steps.indexOf(step) + 1} of ${this.steps.length})`;
    const record = await api.record(this.state.run, this.state.sentence, step);
    performance.mark('nmt:record-loaded');
    if (this.state.step !== step) return;  // a later change won
    const first = !this.record || fresh;
    this.record = record;
    if (first || this.state.pinned >= record.meta.tgt_pieces.length) this.state.pinned = null;
    this.fillModelControls(first);
    await this.draw();
  }

  fillModelControls(first) {
    const c = this.controls;
    const meta = this.record.meta;
    const kinds = Object.keys(this.record.matrices);
    if (!kinds.includes(this.state.kind)) this.state.kind = 'cross';
    fillSelect(c.kind, kinds.map((k) => [k, KIND_NAMES[k]]), this.state.kind);
    const [L, H] = this.record.matrices[this.state.kind].shape;
    if (first && this.state.kind === 'cross') this.state.layer = ((meta.alignment_layer % L) + L) % L;
    this.state.layer = Math.min(this.state.layer, L - 1);
    fillSelect(c.layer, [...Array(L).keys()].map((l) => [l, `${l}`]), this.state.layer);
    const heads = [['mean', 'mean'], ['max', 'max'], ...[...Array(H).keys()].map((h) => [h, `${h}`])];
    if (!heads.some(([v]) => String(v) === String(this.state.head))) this.state.head = 'mean';
    fillSelect(c.head, heads, this.state.head);
    c.gold.disabled = !meta.gold;
  }

  async setState(patch) {
    Object.assign(this.state, patch);
    if ('kind' in patch) this.fillModelControls(false);
    await this.draw();
  }

  /** The matrix on screen: kind, layer and head of the record, in pieces or words. */
  view(record = this.record) {
    const s = this.state;
    const pieces = select(record, s.kind, s.layer, s.head);
    return s.unit === 'words' ? toWords(pieces) : pieces;
  }

  goldCells(view) {
    const gold = this.record.meta.gold;
    if (!gold || !this.state.gold || this.state.kind !== 'cross') return null;
    const rows = view.pieceRowSpans || this.record.meta.tgt_words;
    const cols = view.pieceColSpans || this.record.meta.src_words;
    const words = this.state.unit === 'words';
    const cell = ([i, j]) => (words ? {r0: j, r1: j + 1, c0: i, c1: i + 1}
                                    : {r0: rows[j][0], r1: rows[j][rows[j].length - 1] + 1,
                                       c0: cols[i][0], c1: cols[i][cols[i].length - 1] + 1});
    const inRange = ([i, j]) => j < rows.length && i < cols.length;
    return {sure: gold.sure.filter(inRange).map(cell), possible: gold.possible.filter(inRange).map(cell)};
  }

  async draw() {
    const s = this.state;
    const meta = this.record.meta;
    const view = (this.current = this.view());
    const positions = s.kind === 'cross' && meta.positions && s.unit === 'pieces' ? meta.positions : null;
    this.heatmap.draw(view, {links: s.links ? argmaxLinks(view) : null, gold: this.goldCells(view), positions,
                             window: meta.window_size, pinned: s.pinned});
    this.links.draw(s.pinned === null ? view : pinRow(view, s.pinned));
    headGrid(this.grid, this.record, s.kind, {selected: {layer: s.layer, head: s.head},
                                              onSelect: (layer, head) => this.change('grid', () => {
                                                this.controls.layer.value = layer;
                                                this.controls.head.value = head;
                                                return this.setState({layer, head: String(head)});
                                              })});
    this.showTexts(meta);
    await this.drawCompare(view);
  }

  showTexts(meta) {
    const search = meta.search.forced ? 'forced (the given translation)'
      : `beam ${meta.search.beam_size}, length penalty ${meta.search.length_penalty}`;
    const rows = [['source', meta.source], ['hypothesis', `${meta.hypothesis}` +
                  (meta.score === null ? '' : `   (score ${meta.score}; ${search})`)]];
    if (meta.reference) rows.push(['reference', meta.reference + (meta.chrf === null ? '' : `   (chrF ${meta.chrf})`)]);
    this.texts.textContent = '';
    for (const [k, v] of rows) this.texts.append(el('div', {}, el('b', {textContent: `${k}: `}), v));
  }

  fillCompare() {
    const options = [['none', 'nothing']];
    for (const r of this.runs || []) {
      if (r.run !== this.state.run) options.push([`run:${r.run}`, `run ${r.run}`]);
    }
    const steps = [...new Set(this.sentences.flatMap((s) => s.steps))].sort((a, b) => a - b);
    for (const step of steps) options.push([`step:${step}`, `step ${step} of this run`]);
    fillSelect(this.controls.compare, options, this.state.compare);
  }

  async setCompare(value) {
    this.state.compare = value;
    await this.draw();
  }

  async drawCompare(view) {
    const value = this.state.compare;
    const on = value !== 'none';
    this.mainB.hidden = this.mainDiff.hidden = !on;
    if (!on) return;
    const [mode, arg] = [value.slice(0, value.indexOf(':')), value.slice(value.indexOf(':') + 1)];
    const run = mode === 'run' ? arg : this.state.run;
    const other = mode === 'run' ? (await api.sentences(run)).find((x) => x.sentence === this.state.sentence) : null;
    let step = mode === 'step' ? Number(arg) : this.state.step;
    if (other && !other.steps.includes(step)) step = other.steps[other.steps.length - 1];
    const record = await api.record(run, this.state.sentence, step);
    const b = this.view(record);
    this.heatmapB.draw(b, {});
    this.mainB.dataset.title = `${run}, step ${step}`;
    const diff = difference(view, b);
    if (diff) this.heatmapDiff.draw(diff, {signed: true});
    this.mainDiff.dataset.title = diff ? 'difference (this - that)' : 'different tokens: no difference map';
  }

  togglePlay() {
    if (this.timer) return this.stopPlay();
    this.controls.play.textContent = '\u25a0 stop';
    this.timer = setInterval(() => {
      const next = (Number(this.controls.step.value) + 1) % this.steps.length;
      this.controls.step.value = next;
      this.change('play', () => this.loadRecord(this.steps[next]));
    }, 700);
  }

  stopPlay() {
    clearInterval(this.timer);
    this.timer = null;
    this.controls.play.textContent = '\u25b6 play';
  }

  async export(kind, button) {
    const view = this.current;
    const name = `attention_${this.state.run.replace(/[^\w.-]+/g, '_')}_s${this.state.sentence}_step${this.state.step}` +
        `_${this.state.kind}_L${this.state.layer}_H${this.state.head}`;
    const blob = kind === 'png' ? await this.heatmap.png()
      : kind === 'svg' ? new Blob([this.heatmap.svg()], {type: 'image/svg+xml'})
      : kind === 'csv' ? new Blob([toCSV(view)], {type: 'text/csv'})
      : new Blob([JSON.stringify({run: this.state.run, sentence: this.state.sentence, step: this.state.step,
                                  kind: this.state.kind, layer: this.state.layer, head: this.state.head,
                                  unit: this.state.unit, rows: view.rowLabels, cols: view.colLabels,
                                  values: Array.from(view.values)})], {type: 'application/json'});
    const head = new Uint8Array(await blob.slice(0, 8).arrayBuffer());
    button.dataset.bytes = blob.size;
    window.nmtAttention.lastExport = {kind, size: blob.size, head: Array.from(head)};
    const link = el('a', {href: URL.createObjectURL(blob), download: `${name}.${kind}`});
    document.body.append(link);
    link.click();
    link.remove();
  }
}

function pinRow(view, r) {
  const values = new Float32Array(view.values.length);
  values.set(view.values.subarray(r * view.cols, (r + 1) * view.cols), r * view.cols);
  return {...view, values};
}

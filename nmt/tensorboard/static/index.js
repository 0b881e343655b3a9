// Entry point of the Attention tab: TensorBoard imports this module in the plugin's iframe and
// calls render(). Everything ships in the package (no CDN, nothing fetched but the plugin's routes).
// The run list and every module are requested at once, so the first paint waits for one round trip
// of each rather than a chain of them.

const MODULES = ['app', 'api', 'colors', 'grid', 'heatmap', 'links', 'math'];

export async function render() {
  const runs = fetch('./runs').then((r) => (r.ok ? r.json() : Promise.reject(new Error(`runs: ${r.status}`))));
  const modules = Promise.all(MODULES.map((m) => import(`./static/${m}.js`)));
  const style = document.createElement('link');
  style.rel = 'stylesheet';
  style.href = './static/style.css';
  document.head.append(style);
  const [{App}] = await modules;
  performance.mark('nmt:modules-loaded');
  const root = document.createElement('main');
  document.body.append(root);
  const app = new App(root);
  // for tests and the curious: the state, the matrix on screen, the views
  window.nmtAttention = {app, lastExport: null, current: () => app.current && {
    rows: app.current.rows, cols: app.current.cols, rowLabels: app.current.rowLabels,
    colLabels: app.current.colLabels, values: Array.from(app.current.values), state: {...app.state}}};
  await app.start(runs);
}

// Colour maps: viridis for weights in [0, 1] (perceptually uniform, readable in grey) and a
// blue-white-red map for differences in [-1, 1].

const VIRIDIS = [
  [68, 1, 84], [72, 36, 117], [65, 68, 135], [53, 95, 141], [42, 120, 142], [33, 145, 140],
  [34, 168, 132], [68, 191, 112], [122, 209, 81], [189, 223, 38], [253, 231, 37],
];

function interpolate(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
}

const LUT = [...Array(256).keys()].map((i) => interpolate(VIRIDIS, i / 255));

/** [r, g, b] of a weight in [0, 1]. */
export function viridis(value) {
  return LUT[Math.round(Math.min(1, Math.max(0, value)) * 255)];
}

/** [r, g, b] of a difference in [-1, 1]: blue below zero, white at zero, red above. */
export function diverging(value) {
  const v = Math.min(1, Math.max(-1, value));
  const fade = Math.round(255 * (1 - Math.abs(v)));
  return v >= 0 ? [255, fade, fade] : [fade, fade, 255];
}

/** An off-screen canvas with one pixel per cell, for drawImage scaling (fast for 100 x 100 and more). */
export function cellImage(view, {signed = false, scale = 1} = {}) {
  const canvas = document.createElement('canvas');
  canvas.width = view.cols;
  canvas.height = view.rows;
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(view.cols, view.rows);
  for (let i = 0; i < view.rows * view.cols; i++) {
    const [r, g, b] = signed ? diverging(view.values[i] * scale) : viridis(view.values[i] * scale);
    image.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

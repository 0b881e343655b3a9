// Data access for the Attention tab: the plugin's JSON routes (relative to the plugin's base URL,
// which TensorBoard sets to data/plugin/nmt_attention/), with a cache per record.

const records = new Map();

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`${url}: ${response.status} ${await response.text()}`);
  }
  return response.json();
}

/** @return {Promise<Array<{sentence: number, source: string, chrf: ?number, length: number, steps: number[]}>>} */
export async function sentences(run) {
  return (await getJSON(`./sentences?run=${encodeURIComponent(run)}`)).sentences;
}

/**
 * One record: {meta, matrices: {kind: {shape: [L, H, X, Y], data: Float32Array}}}.
 * Matrices travel as base64 little-endian float16 and are widened to float32 here.
 */
export async function record(run, sentence, step) {
  const key = `${run}\u0000${sentence}\u0000${step}`;
  if (!records.has(key)) {
    const url = `./record?run=${encodeURIComponent(run)}&sentence=${sentence}&step=${step}`;
    records.set(key, getJSON(url).then(decodeRecord).catch((err) => {
      records.delete(key);
      throw err;
    }));
  }
  return records.get(key);
}

/** Put a record that arrived with another response (the tab's first one comes with /runs) in the cache. */
export function prime(body) {
  const key = `${body.run}\u0000${body.meta.sentence}\u0000${body.meta.step}`;
  records.set(key, Promise.resolve(decodeRecord(body)));
}

function decodeRecord(body) {
  const matrices = {};
  for (const [kind, m] of Object.entries(body.matrices)) {
    matrices[kind] = {shape: m.shape, data: halfToFloat(base64Bytes(m.data))};
  }
  return {meta: body.meta, matrices};
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** IEEE 754 binary16 (little endian) -> Float32Array. */
export function halfToFloat(bytes) {
  const n = bytes.length >> 1;
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) {
    const h = view.getUint16(2 * i, true);
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) out[i] = sign * fraction * 2 ** -24;
    else if (exponent === 31) out[i] = fraction ? NaN : sign * Infinity;
    else out[i] = sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  return out;
}

// Loads the exported folder in onnxruntime-node and compares it with the PyTorch reference
// written by export.py (out/reference.json).
//   node models/toy-shapes-train/check-onnx.mjs [models/toy-shapes] [models/toy-shapes-train/out/reference.json]
import * as ort from 'onnxruntime-node';
import { readFileSync, statSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dir = process.argv[2] ?? join(here, '..', 'toy-shapes');
const ref = JSON.parse(readFileSync(process.argv[3] ?? join(here, 'out', 'reference.json'), 'utf8'));
const opts = { intraOpNumThreads: 1, interOpNumThreads: 1 };

function meta(s) {
  const io = (names, m) => names.map((n, i) => `${n}:${m[i]?.type}[${m[i]?.shape}]`).join(' ');
  return `in ${io(s.inputNames, s.inputMetadata)} -> out ${io(s.outputNames, s.outputMetadata)}`;
}
function rel(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}
const sum = (a) => a.reduce((s, x) => s + x, 0);

const te = await ort.InferenceSession.create(join(dir, 'text_encoder', 'model.onnx'), opts);
const unet = await ort.InferenceSession.create(join(dir, 'unet', 'model.onnx'), opts);
const vae = await ort.InferenceSession.create(join(dir, 'vae_decoder', 'model.onnx'), opts);
console.log('text_encoder', meta(te));
console.log('unet', meta(unet));
console.log('vae_decoder', meta(vae));

const ids = new Int32Array(ref.input_ids.flat());
const t = await te.run({ input_ids: new ort.Tensor('int32', ids, [2, 77]) });
const lhs = t.last_hidden_state;
const d = lhs.dims[2];
const row = Array.from(lhs.data.slice(3 * d, 3 * d + 8));
console.log('last_hidden_state', lhs.dims, 'rel err', rel(row, ref.last_hidden_state_first).toExponential(2),
  'sum', sum(lhs.data).toFixed(3), 'ref', ref.last_hidden_state_sum.toFixed(3));
const u = await unet.run({
  sample: new ort.Tensor('float32', Float32Array.from(ref.sample_seed0), [2, 4, 8, 8]),
  timestep: new ort.Tensor('float32', Float32Array.from([ref.timestep]), [1]),
  encoder_hidden_states: lhs,
});
console.log('out_sample', u.out_sample.dims, 'rel err', rel(Array.from(u.out_sample.data.slice(0, 16)), ref.out_sample_first).toExponential(2),
  'sum', sum(u.out_sample.data).toFixed(4), 'ref', ref.out_sample_sum.toFixed(4));
// The UNet is fully convolutional: a 16x16 latent (64x64 image) must run too.
const big = await unet.run({
  sample: new ort.Tensor('float32', new Float32Array(2 * 4 * 16 * 16).fill(0.1), [2, 4, 16, 16]),
  timestep: new ort.Tensor('float32', Float32Array.from([981, 981]), [2]),
  encoder_hidden_states: lhs,
});
console.log('out_sample 16x16', big.out_sample.dims);
const cfg = JSON.parse(readFileSync(join(dir, 'vae_decoder', 'config.json'), 'utf8'));
const z = Float32Array.from(ref.sample_seed0.slice(0, 256), (x) => x / cfg.scaling_factor);
const v = await vae.run({ latent_sample: new ort.Tensor('float32', z, [1, 4, 8, 8]) });
console.log('sample', v.sample.dims, 'rel err', rel(Array.from(v.sample.data.slice(0, 16)), ref.decoded_first).toExponential(2),
  'min', Math.min(...v.sample.data).toFixed(3), 'max', Math.max(...v.sample.data).toFixed(3));

let total = 0;
const walk = (p) => { for (const e of readdirSync(p, { withFileTypes: true })) { const q = join(p, e.name); if (e.isDirectory()) walk(q); else total += statSync(q).size; } };
walk(dir);
console.log('folder size', (total / 1e6).toFixed(2), 'MB');

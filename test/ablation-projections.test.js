// The ablations' edits touch only what they name: a K-only edit leaves every V weight bit-identical, a layer subset
// leaves every other layer bit-identical, and in both cases embedding mode (split or per-layer routed conditioning)
// gives the UNet outputs weights mode gives. References: W·M with M = I + DᵀG computed here in float64, and the
// unedited initializers themselves; UNet outputs from onnxruntime on the tiny diffusers-style export
// (test/fixtures/make_tiny_unet.py) and the embedded model's UNet (16 layers, down/mid/up names).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel, encodeModel, tensorToFloat32 } from '../lib/model/onnx/index.js';
import { findCrossAttention, selectLayers, layerBlock } from '../lib/model/cross-attention.js';
import { referenceSolver } from '../lib/solver/select.js';
import {
  patchUnetWeights,
  splitConditioningUnet,
  routeConditioningUnet,
  conditioningRoutes,
  editedConditioning,
  V_INPUT,
} from '../lib/edit/apply.js';
import { saveEdit, loadEdit } from '../lib/edit/edit-file.js';
import { addonAvailable } from '../lib/solver/backend.js';

const tinyUnet = new URL('./fixtures/tiny-unet.onnx', import.meta.url).pathname;
const toyUnet = new URL('../models/toy-shapes/unet/model.onnx', import.meta.url).pathname;

function randn(n, seed, scale = 1) {
  let s = seed >>> 0;
  const next = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return (s + 1) / 2 ** 32;
  };
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next()) * scale);
}

async function step(d, mode, layers, seed = 1, rows = 20) {
  const C = randn(rows * d, seed);
  const noise = randn(rows * d, seed + 1, 0.5);
  const Cs = Float32Array.from(C, (v, i) => v + noise[i]);
  const [lr] = await referenceSolver.solve(d, [{ source: C, destination: Cs, rows, lambda: 0.1 }]);
  return { pairs: [], preserve: [], lambda: 0.1, augmentations: [], mode, ...(layers ? { layers } : {}), rows, D: lr.D, G: lr.G };
}

/** W' = W·M in float64, W in ONNX layout [d, out] (so W'ᵀ = Mᵀ·Wᵀ per output unit), M = (I + D₁ᵀG₁)(I + D₂ᵀG₂)… */
function referencePatch(onnxW, d, out, steps) {
  let M = new Float64Array(d * d);
  for (let i = 0; i < d; i++) M[i * d + i] = 1;
  for (const st of steps) {
    const S = new Float64Array(d * d); // I + DᵀG
    for (let i = 0; i < d; i++) S[i * d + i] = 1;
    for (let r = 0; r < st.rows; r++)
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) S[i * d + j] += st.D[r * d + i] * st.G[r * d + j];
    const next = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let k = 0; k < d; k++) for (let j = 0; j < d; j++) next[i * d + j] += M[i * d + k] * S[k * d + j];
    M = next;
  }
  // PyTorch row w (length d) of unit o is column o of the ONNX weight; w' = w·M.
  const res = new Float64Array(d * out);
  for (let o = 0; o < out; o++)
    for (let j = 0; j < d; j++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc += onnxW[k * out + o] * M[k * d + j];
      res[j * out + o] = acc;
    }
  return res;
}

const init = (model, name) => tensorToFloat32(model.graph.initializer.find((t) => t.name === name));
const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** Which projections an edit of these steps must leave alone, checked bit for bit; the others against W·M. */
function checkPatched(unet, map, patched, edit) {
  for (const l of map.layers)
    for (const p of [l.k, l.v]) {
      const steps = edit.steps.filter((s) => (s.mode === 'kv' || s.mode === p.kind) && (!s.layers || s.layers.includes(l.index)));
      const before = init(unet.model, p.initializer);
      const after = init(patched, p.initializer);
      if (steps.length === 0) assert.deepEqual(after, before, `layer ${l.index} ${p.kind} must keep its bits`);
      else {
        const ref = referencePatch(before, p.inputWidth, p.width, steps);
        assert.ok(maxAbsDiff(after, ref) <= 1e-4 * Math.max(1, maxAbs(ref)), `layer ${l.index} ${p.kind} is not W·M`);
        assert.ok(maxAbsDiff(after, before) > 1e-4, `layer ${l.index} ${p.kind} must change`);
      }
    }
}

async function runUnet(bytes, d, E, extra = {}) {
  const session = await ort.InferenceSession.create(bytes);
  const feeds = {
    sample: new ort.Tensor('float32', randn(2 * 4 * 4 * 4, 42), [2, 4, 4, 4]),
    timestep: new ort.Tensor('float32', new Float32Array([10, 10]), [2]),
    encoder_hidden_states: new ort.Tensor('float32', E, [2, 77, d]),
  };
  for (const [k, v] of Object.entries(extra)) feeds[k] = new ort.Tensor('float32', v, [2, 77, d]);
  const out = (await session.run(feeds)).out_sample.data;
  await session.release();
  return out;
}

test('K-only: V weights bit-identical, K = W·M; split embedding mode equals weights mode', async () => {
  const unet = await loadModel(tinyUnet);
  const map = findCrossAttention(unet.model.graph);
  const d = map.d;
  const edit = { d, fingerprint: 'x', steps: [await step(d, 'k', undefined, 3)] };
  const patched = await patchUnetWeights(unet, map, edit);
  checkPatched(unet, map, patched, edit);
  const E = randn(2 * 77 * d, 8);
  const viaWeights = await runUnet(encodeModel(patched), d, E);
  const cond = editedConditioning(edit, E);
  assert.deepEqual(cond.extraInputs[V_INPUT], E, 'V reads the unedited conditioning');
  const viaSplit = await runUnet(encodeModel(splitConditioningUnet(unet, map)), d, cond.encoderHiddenStates, cond.extraInputs);
  const scale = maxAbs(viaWeights);
  assert.ok(maxAbsDiff(viaSplit, viaWeights) <= 2e-5 * scale, `split vs weights ${maxAbsDiff(viaSplit, viaWeights)}`);
  assert.ok(maxAbsDiff(viaWeights, await runUnet(unet.bytes, d, E)) > 1e-3 * scale, 'the K-only edit changes the output');
});

test('layer subsets: the other layers keep their bits; routed embedding mode equals weights mode (also K+V then V-only on one layer)', async () => {
  const unet = await loadModel(tinyUnet);
  const map = findCrossAttention(unet.model.graph);
  const d = map.d;
  const cases = [
    { d, fingerprint: 'x', steps: [await step(d, 'kv', [1], 4)] },
    { d, fingerprint: 'x', steps: [await step(d, 'k', [0, 2], 5)] },
    { d, fingerprint: 'x', steps: [await step(d, 'kv', undefined, 6), await step(d, 'v', [0], 7)] },
  ];
  for (const edit of cases) {
    const patched = await patchUnetWeights(unet, map, edit);
    checkPatched(unet, map, patched, edit);
    const E = randn(2 * 77 * d, 9);
    const viaWeights = await runUnet(encodeModel(patched), d, E);
    const routes = conditioningRoutes(edit, map);
    const cond = editedConditioning(edit, E, routes);
    assert.deepEqual(cond.encoderHiddenStates, E, 'the original input carries E itself');
    const viaRoutes = await runUnet(encodeModel(routeConditioningUnet(unet, map, routes)), d, cond.encoderHiddenStates, cond.extraInputs);
    const scale = maxAbs(viaWeights);
    assert.ok(maxAbsDiff(viaRoutes, viaWeights) <= 2e-5 * scale, `routed vs weights ${maxAbsDiff(viaRoutes, viaWeights)}`);
  }
  // The last case: layer 0's V is edited by both steps, every other projection by the first only: two routes.
  const routes = conditioningRoutes(cases[2], map);
  assert.deepEqual(
    routes.map((r) => r.steps),
    [[0], [0, 1]],
  );
  assert.deepEqual(routes[1].projections, [{ layer: 0, kind: 'v' }]);
});

test('the embedded UNet: down/mid/up name its 16 layers; the native (stacked) patch leaves other layers bit-identical', async () => {
  const unet = await loadModel(toyUnet);
  const map = findCrossAttention(unet.model.graph);
  assert.deepEqual(map.layers.map(layerBlock), [...Array(6).fill('down'), 'mid', ...Array(9).fill('up')]);
  assert.deepEqual(selectLayers(map, 'mid'), [6]);
  assert.deepEqual(selectLayers(map, 'up,0-1'), [0, 1, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.throws(() => selectLayers(map, '16'), /layer 16 does not exist: this UNet has layers 0-15/);
  assert.throws(() => selectLayers(map, 'left'), /'left' in the layer list/);
  const edit = { d: map.d, fingerprint: 'x', steps: [await step(map.d, 'kv', selectLayers(map, 'mid,up'), 11, 40)] };
  const ts = await patchUnetWeights(unet, map, edit);
  checkPatched(unet, map, ts, edit);
  if (addonAvailable()) {
    const native = await patchUnetWeights(unet, map, edit, { backend: 'cpu' });
    checkPatched(unet, map, native, edit);
  }
});

test('an edit file keeps mode k and the layer list; a damaged layer list is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ablation-file-'));
  try {
    const edit = { d: 12, fingerprint: 'x', steps: [await step(12, 'k', [0, 2], 12)] };
    saveEdit(join(dir, 'e.safetensors'), edit);
    const back = await loadEdit(join(dir, 'e.safetensors'));
    assert.equal(back.steps[0].mode, 'k');
    assert.deepEqual(back.steps[0].layers, [0, 2]);
    const all = { d: 12, fingerprint: 'x', steps: [await step(12, 'kv', undefined, 13)] };
    saveEdit(join(dir, 'all.safetensors'), all);
    assert.equal('layers' in (await loadEdit(join(dir, 'all.safetensors'))).steps[0], false, 'no layer list: all layers');
    const bad = { ...edit, steps: [{ ...edit.steps[0], layers: [2, 0] }] };
    saveEdit(join(dir, 'bad.safetensors'), bad);
    await assert.rejects(loadEdit(join(dir, 'bad.safetensors')), /layers must be a non-empty ascending list/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

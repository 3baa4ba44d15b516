// Query-sliced attention (lib/model/attention-slicing.ts): found by structure on hand-made graphs of the patterns
// torch exports (scale after Q·Kᵀ as Mul or Div, scale folded into Q, an fp16-style Cast around the softmax,
// cross-attention whose keys come from a graph input), sliced results against a float64 softmax(Q·Kᵀ·s)·V written
// here, and images of the embedded model sliced vs unsliced within 1/255 per pixel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { findAttentionSites, sliceAttention } from '../lib/model/attention-slicing.js';
import { decodeModel, encodeModel, loadModel } from '../lib/model/onnx/index.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { generate } from '../lib/sample/generate.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const embedded = join(root, 'models', 'toy-shapes');
const haveEmbedded = existsSync(join(embedded, 'unet', 'model.onnx'));

const valueInfo = (name, dims) => ({
  name,
  type: { tensorType: { elemType: 1, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) } } },
});
const node = (opType, input, output, attribute = []) => ({ opType, name: output[0], input, output, attribute });
const intAttr = (name, i) => ({
  name,
  i,
  type: 2,
  floats: [],
  ints: [],
  strings: [],
  tensors: [],
  graphs: [],
  typeProtos: [],
  sparseTensors: [],
});
const floatInit = (name, dims, values) => ({
  name,
  dims,
  dataType: 1,
  rawData: new Uint8Array(new Float32Array(values).buffer),
  floatData: [],
  int32Data: [],
  stringData: [],
  int64Data: [],
  doubleData: [],
  uint64Data: [],
  externalData: [],
});

/**
 * An attention graph: q [B,H,N,D], k [B,H,M,D], v [B,H,M,D] → out [B,H,N,D], in one of the exported forms.
 * 'mul': softmax(Q·Kᵀ · s); 'div': softmax(Q·Kᵀ / r); 'folded': softmax((Q·√s)·(Kᵀ·√s)); 'cast': Cast(to float)
 * around the softmax (an fp16 export's upcast, here float→float); 'cross': keys projected from a graph input.
 */
function attentionModel(form, D) {
  const nodes = [];
  const inits = [];
  const inputs = [valueInfo('q', ['B', 'H', 'N', D]), valueInfo('v', ['B', 'H', 'M', D])];
  let keys = 'k';
  if (form === 'cross') {
    // keys = Transpose(Reshape(MatMul(text, W))) from a graph input, as a cross-attention's to_k.
    inputs.push(valueInfo('text', [1, 'M', D]));
    inits.push(
      floatInit(
        'wk',
        [D, D],
        Array.from({ length: D * D }, (_, i) => ((i * 7) % 11) / 11 - 0.5),
      ),
    );
    inits.push({
      ...floatInit('kshape', [4], []),
      dataType: 7,
      rawData: new Uint8Array(new BigInt64Array([1n, -1n, 1n, BigInt(D)]).buffer),
    });
    nodes.push(
      node('MatMul', ['text', 'wk'], ['kproj']),
      node('Reshape', ['kproj', 'kshape'], ['kr']),
      node('Transpose', ['kr'], ['k4'], [{ ...intAttr('perm', 0), i: undefined, ints: [0, 2, 1, 3], type: 7 }]),
    );
    keys = 'k4';
  } else {
    // Self-attention keys are computed inside the graph (a projection of the hidden states): here k + 0.
    inputs.push(valueInfo('kin', ['B', 'H', 'M', D]));
    inits.push(floatInit('zero', [], [0]));
    nodes.push(node('Add', ['kin', 'zero'], ['k']));
  }
  const kt = { ...intAttr('perm', 0), i: undefined, ints: [0, 1, 3, 2], type: 7 };
  nodes.push(node('Transpose', [keys], ['kt'], [kt]));
  const s = 1 / Math.sqrt(D);
  let q = 'q';
  let k = 'kt';
  if (form === 'folded') {
    inits.push(floatInit('sq', [], [Math.sqrt(s)]));
    nodes.push(node('Mul', ['q', 'sq'], ['qs']), node('Mul', ['kt', 'sq'], ['ks']));
    q = 'qs';
    k = 'ks';
  }
  nodes.push(node('MatMul', [q, k], ['scores']));
  let pre = 'scores';
  if (form === 'div') {
    inits.push(floatInit('r', [], [Math.sqrt(D)]));
    nodes.push(node('Div', ['scores', 'r'], ['scaled']));
    pre = 'scaled';
  } else if (form !== 'folded') {
    inits.push(floatInit('s', [], [s]));
    nodes.push(node('Mul', ['scores', 's'], ['scaled']));
    pre = 'scaled';
  }
  if (form === 'cast') {
    nodes.push(node('Cast', [pre], ['up'], [intAttr('to', 1)]));
    pre = 'up';
  }
  nodes.push(node('Softmax', [pre], ['probs'], [intAttr('axis', -1)]));
  let probs = 'probs';
  if (form === 'cast') {
    nodes.push(node('Cast', ['probs'], ['down'], [intAttr('to', 1)]));
    probs = 'down';
  }
  nodes.push(node('MatMul', [probs, 'v'], ['out']));
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    metadataProps: [],
    trainingInfo: [],
    functions: [],
    graph: {
      name: 'attention',
      node: nodes,
      initializer: inits,
      input: inputs,
      output: [valueInfo('out', ['B', 'H', 'N', D])],
      valueInfo: [],
      quantizationAnnotation: [],
      sparseInitializer: [],
    },
  };
}

/** Deterministic values in [-1, 1). */
function values(n, seed) {
  let x = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 31 - 1;
  });
}

/** float64 softmax(q·kᵀ/√D)·v for [B·H, N, D] × [B·H, M, D]. */
function reference(q, k, v, BH, N, M, D) {
  const out = new Float64Array(BH * N * D);
  const s = 1 / Math.sqrt(D);
  for (let b = 0; b < BH; b++)
    for (let i = 0; i < N; i++) {
      const logits = new Float64Array(M);
      let max = -Infinity;
      for (let j = 0; j < M; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(b * N + i) * D + d] * k[(b * M + j) * D + d];
        logits[j] = dot * s;
        max = Math.max(max, logits[j]);
      }
      let sum = 0;
      for (let j = 0; j < M; j++) sum += logits[j] = Math.exp(logits[j] - max);
      for (let j = 0; j < M; j++) for (let d = 0; d < D; d++) out[(b * N + i) * D + d] += (logits[j] / sum) * v[(b * M + j) * D + d];
    }
  return out;
}

async function run(model, feeds) {
  const session = await ort.InferenceSession.create(encodeModel(model));
  try {
    const r = await session.run(feeds);
    return r.out;
  } finally {
    await session.release();
  }
}

const maxAbs = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

for (const form of ['mul', 'div', 'folded', 'cast']) {
  test(`${form}: found as self-attention; 1, 3, 4 and 7 slices (N = 10) match float64 softmax(Q·Kᵀ/√D)·V`, async () => {
    const [B, H, N, M, D] = [2, 3, 10, 10, 8];
    const q = values(B * H * N * D, 1);
    const k = values(B * H * M * D, 2);
    const v = values(B * H * M * D, 3);
    const want = reference(q, k, v, B * H, N, M, D);
    const sites = findAttentionSites(attentionModel(form, D).graph);
    assert.equal(sites.length, 1);
    assert.equal(sites[0].cross, false);
    const feeds = () => ({
      q: new ort.Tensor('float32', q, [B, H, N, D]),
      kin: new ort.Tensor('float32', k, [B, H, M, D]),
      v: new ort.Tensor('float32', v, [B, H, M, D]),
    });
    const plain = await run(attentionModel(form, D), feeds());
    assert.ok(maxAbs(plain.data, want) < 1e-5, 'the unsliced graph computes attention');
    for (const slices of [3, 4, 7]) {
      const model = attentionModel(form, D);
      const report = sliceAttention(model, slices);
      assert.deepEqual(report, { found: 1, selfAttention: 1, sliced: 1, slices });
      assert.equal(model.graph.node.filter((n) => n.opType === 'Softmax').length, slices);
      // Through the codec and back, as a session gets it.
      const out = await run(decodeModel(encodeModel(model)), feeds());
      assert.deepEqual(out.dims, [B, H, N, D]);
      const err = maxAbs(out.data, want);
      assert.ok(err < 1e-5, `${slices} slices: max error ${err}`);
      assert.ok(maxAbs(out.data, plain.data) < 1e-6, `${slices} slices vs unsliced`);
    }
  });
}

test('cross-attention (keys projected from a graph input) is found, left alone by default, sliced with "all"', async () => {
  const D = 8;
  const [N, M] = [12, 5];
  const sites = findAttentionSites(attentionModel('cross', D).graph);
  assert.equal(sites.length, 1);
  assert.equal(sites[0].cross, true);
  const untouched = attentionModel('cross', D);
  assert.deepEqual(sliceAttention(untouched, 4), { found: 1, selfAttention: 0, sliced: 0, slices: 1 });
  const model = attentionModel('cross', D);
  assert.equal(sliceAttention(model, 4, 'all').sliced, 1);
  const q = values(N * D, 4);
  const text = values(M * D, 5);
  const v = values(M * D, 6);
  const feeds = () => ({
    q: new ort.Tensor('float32', q, [1, 1, N, D]),
    text: new ort.Tensor('float32', text, [1, M, D]),
    v: new ort.Tensor('float32', v, [1, 1, M, D]),
  });
  const a = await run(attentionModel('cross', D), feeds());
  const b = await run(model, feeds());
  assert.ok(maxAbs(a.data, b.data) < 1e-6);
});

test('slices = 1 leaves a model unchanged; a bad count or a second rewrite is refused', () => {
  const model = attentionModel('mul', 8);
  const before = encodeModel(model);
  assert.equal(sliceAttention(model, 1).sliced, 0);
  assert.deepEqual(encodeModel(model), before);
  assert.throws(() => sliceAttention(attentionModel('mul', 8), 0), /attention slices must be an integer/);
  assert.throws(() => sliceAttention(attentionModel('mul', 8), 1.5), /attention slices must be an integer/);
  const twice = attentionModel('mul', 8);
  sliceAttention(twice, 2);
  assert.throws(() => sliceAttention(twice, 2), /already sliced/);
});

test('embedded model: 32 attentions found (16 self), images sliced 4 and 3 ways within 1/255 of unsliced', {
  skip: !haveEmbedded,
}, async () => {
  const m = await loadModel(join(embedded, 'unet', 'model.onnx'));
  const sites = findAttentionSites(m.model.graph);
  assert.equal(sites.length, 32);
  assert.equal(sites.filter((s) => !s.cross).length, 16);
  const p = await loadPipeline(undefined, { threads: 2 });
  try {
    // 64×64 images: 16×16 latents, N = 256 query rows at the first level (3 slices do not divide it).
    const o = { prompts: ['a red circle'], seeds: [0, 1], steps: 3, guidance: 7.5, height: 64, width: 64 };
    const plain = await generate(p, { ...o, attentionSlices: 1 });
    assert.equal(p.attentionSlicing.sliced, 0);
    for (const slices of [4, 3]) {
      const sliced = await generate(p, { ...o, attentionSlices: slices });
      assert.deepEqual(p.attentionSlicing, { found: 32, selfAttention: 16, sliced: 16, slices });
      for (const [i, img] of sliced.entries()) {
        const worst = img.rgb.reduce((w, x, j) => Math.max(w, Math.abs(x - plain[i].rgb[j])), 0);
        assert.ok(worst <= 1, `${slices} slices, seed ${img.seed}: a pixel differs by ${worst}/255`);
      }
    }
  } finally {
    await p.close();
  }
});

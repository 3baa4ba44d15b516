// End-to-end sampling on the committed tiny SD-shaped fixtures (scripts/make-model-variants.py) and on the
// embedded model when it is present: determinism, seeds, dtype variants, batching of guidance, conditioning and
// withUnet(), and a sampling loop recomputed here call by call (unbatched, float64 DDIM) that must give the same image.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPipeline } from '../lib/model/pipeline.js';
import { generate } from '../lib/sample/generate.js';
import { gaussianNoise } from '../lib/sample/noise.js';
import { alphasCumprod } from '../lib/sample/schedulers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fx = (name) => join(root, 'test', 'fixtures', name);
const embedded = join(root, 'models', 'toy-shapes');
const haveEmbedded = existsSync(join(embedded, 'model_index.json')) && existsSync(join(embedded, 'unet', 'model.onnx'));

const base = { prompts: ['a red circle'], seeds: [0], steps: 4, guidance: 7.5, height: 16, width: 16 };

function meanAbsDiff(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

test('tiny fixture: same seed gives the same bytes, different seeds differ, prompt-major order', async () => {
  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  try {
    assert.equal(p.textWidth, 8);
    assert.equal(p.vaeScaleFactor, 4);
    assert.deepEqual(p.unetTimestep, { type: 'float32', form: 'batch' });
    const a = await generate(p, { ...base, prompts: ['a red circle', 'a blue square'], seeds: [0, 1, 2] });
    assert.deepEqual(
      a.map((i) => [i.prompt, i.seed]),
      [
        ['a red circle', 0],
        ['a red circle', 1],
        ['a red circle', 2],
        ['a blue square', 0],
        ['a blue square', 1],
        ['a blue square', 2],
      ],
    );
    for (const img of a) assert.equal(img.rgb.length, 16 * 16 * 3);
    const b = await generate(p, { ...base, prompts: ['a red circle', 'a blue square'], seeds: [0, 1, 2], batchSize: 2 });
    a.forEach((img, k) => assert.deepEqual(img.rgb, b[k].rgb, `image ${k} differs between batch sizes 8 and 2`));
    assert.notDeepEqual(a[0].rgb, a[1].rgb, 'seeds 0 and 1 gave the same image');
    assert.notDeepEqual(a[0].rgb, a[3].rgb, 'two prompts gave the same image');
    // Seed 2 alone reproduces the third image of the batch.
    const c = await generate(p, { ...base, seeds: [2] });
    assert.deepEqual(c[0].rgb, a[2].rgb);
  } finally {
    await p.close();
  }
});

test('tiny fixture: guidance batches uncond+cond in one UNet call per step', async () => {
  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  try {
    const before = p.stats.runs;
    await generate(p, { ...base, seeds: [0, 1, 2], steps: 5 }); // PNDM: 6 UNet calls
    assert.equal(p.stats.runs - before, 1 + 6 + 1, 'text encoder + 6 UNet calls + VAE');
    const b2 = p.stats.runs;
    await generate(p, { ...base, seeds: [0, 1, 2], steps: 5, batchSize: 2 }); // two chunks
    assert.equal(p.stats.runs - b2, 1 + 12 + 2);
  } finally {
    await p.close();
  }
});

// The loop recomputed independently: separate unconditional and conditional UNet calls, guidance and the DDIM
// update in float64 here, the VAE scaling and the [-1,1] -> byte mapping written out.
test('tiny fixture: generate equals an unbatched DDIM loop written in the test', async () => {
  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  try {
    const steps = 3;
    const g = 4;
    const [img] = await generate(p, { ...base, seeds: [7], steps, guidance: g, scheduler: 'ddim' });
    const ac = alphasCumprod(p.schedulerConfig);
    const emb = await p.encodePrompts(['a red circle', '']);
    const d = p.textWidth;
    const cond = emb.slice(0, 77 * d);
    const uncond = emb.slice(77 * d);
    let x = Array.from(gaussianNoise(7, 4 * 4 * 4));
    const ts = [667, 334, 1]; // leading spacing: 1000//3 = 333, (0,333,666) + steps_offset 1, reversed
    for (let i = 0; i < steps; i++) {
      const t = ts[i];
      const run = (e) =>
        p.runUnet({ sample: Float32Array.from(x), dims: [1, 4, 4, 4], timestep: t, encoderHiddenStates: { dims: [1, 77, d], data: e } });
      const eu = await run(uncond);
      const ec = await run(cond);
      const at = ac[t];
      const ap = i + 1 < steps ? ac[ts[i + 1]] : ac[0];
      x = x.map((v, k) => {
        const eps = eu[k] + g * (ec[k] - eu[k]);
        const x0 = (v - Math.sqrt(1 - at) * eps) / Math.sqrt(at);
        return Math.sqrt(ap) * x0 + Math.sqrt(1 - ap) * eps;
      });
    }
    const dec = await p.decode(
      Float32Array.from(x, (v) => v / 0.18215),
      [1, 4, 4, 4],
    );
    assert.deepEqual(dec.dims, [1, 3, 16, 16]);
    let maxDiff = 0;
    for (let y = 0; y < 16; y++) {
      for (let xx = 0; xx < 16; xx++) {
        for (let c = 0; c < 3; c++) {
          const v = Math.min(1, Math.max(0, dec.data[c * 256 + y * 16 + xx] / 2 + 0.5));
          maxDiff = Math.max(maxDiff, Math.abs(Math.round(v * 255) - img.rgb[(y * 16 + xx) * 3 + c]));
        }
      }
    }
    assert.ok(maxDiff <= 1, `max byte difference ${maxDiff}`);
  } finally {
    await p.close();
  }
});

test('tiny fixture: conditioning replaces the text encoder; withUnet from a path or bytes gives the same images', async () => {
  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  try {
    const ref = await generate(p, { ...base, prompts: ['a red circle', 'a blue square'], seeds: [3, 4] });
    const cond = await p.encodePrompts(['a red circle', 'a blue square']);
    const uncond = await p.encodePrompts(['']);
    const viaCond = await generate(p, {
      ...base,
      prompts: ['x', 'y'],
      seeds: [3, 4],
      conditioning: { cond: { encoderHiddenStates: cond }, uncond: { encoderHiddenStates: uncond } },
    });
    ref.forEach((img, k) => assert.deepEqual(viaCond[k].rgb, img.rgb));
    assert.equal(viaCond[0].prompt, 'x');
    const neg = await generate(p, { ...base, prompts: ['a red circle', 'a blue square'], seeds: [3, 4], negativePrompt: 'green' });
    assert.notDeepEqual(neg[0].rgb, ref[0].rgb, 'the negative prompt changed nothing');
    const fromPath = await p.withUnet({ path: p.unetPath });
    const fromBytes = await p.withUnet({ modelBytes: new Uint8Array(await readFile(p.unetPath)) });
    for (const q of [fromPath, fromBytes]) {
      const out = await generate(q, { ...base, prompts: ['a red circle', 'a blue square'], seeds: [3, 4] });
      ref.forEach((img, k) => assert.deepEqual(out[k].rgb, img.rgb));
      await q.close();
    }
    // The parent still works after its copies are closed.
    const again = await generate(p, { ...base, seeds: [3] });
    assert.deepEqual(again[0].rgb, ref[0].rgb);
    await assert.rejects(
      p.withUnet({ path: fx('tiny-sd/text_encoder/model.onnx') }),
      /missing input\(s\) sample, timestep, encoder_hidden_states/,
    );
  } finally {
    await p.close();
  }
});

test('tiny fixture: UNet weights in weights.pb; withUnet externalData replaces the file', async () => {
  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  const q = await loadPipeline(fx('tiny-sd-external'), { threads: 1 });
  try {
    const opts = { ...base, seeds: [5, 6] };
    const ref = await generate(p, opts);
    const ext = await generate(q, opts);
    ref.forEach((img, k) => assert.deepEqual(ext[k].rgb, img.rgb));
    const modelBytes = new Uint8Array(await readFile(join(q.dir, 'unet', 'model.onnx')));
    const weights = new Uint8Array(await readFile(join(q.dir, 'unet', 'weights.pb')));
    const same = await q.withUnet({ modelBytes, externalData: [{ path: 'weights.pb', data: weights }] });
    (await generate(same, opts)).forEach((img, k) => assert.deepEqual(img.rgb, ref[k].rgb));
    await same.close();
    const scaled = new Uint8Array(weights);
    const f = new Float32Array(scaled.buffer, 0, 4 * 4 * 9); // conv_w is the first tensor in weights.pb
    for (let i = 0; i < f.length; i++) f[i] *= 0.5;
    const patched = await q.withUnet({ modelBytes, externalData: [{ path: 'weights.pb', data: scaled }] });
    const out = await generate(patched, opts);
    assert.notDeepEqual(out[0].rgb, ref[0].rgb, 'patched external weights were ignored');
    await patched.close();
    await assert.rejects(q.withUnet({ modelBytes }), (err) => err.name === 'ModelError' && /cannot load/.test(err.message));
  } finally {
    await Promise.all([p.close(), q.close()]);
  }
});

test('tiny fixture: fp16, int64 and optimum-style variants load and run', async () => {
  const p32 = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  const p64 = await loadPipeline(fx('tiny-sd-int64'), { threads: 1 });
  const p16 = await loadPipeline(fx('tiny-sd-fp16'), { threads: 1 });
  try {
    assert.deepEqual(p64.unetTimestep, { type: 'int64', form: 'one' });
    assert.deepEqual(p16.unetTimestep, { type: 'float16', form: 'batch' });
    const opts = { ...base, seeds: [0, 1], steps: 6 };
    const a = await generate(p32, opts);
    const b = await generate(p64, opts);
    // PNDM timesteps are integers, so an int64 timestep and int64 ids change nothing.
    a.forEach((img, k) => assert.deepEqual(b[k].rgb, img.rgb));
    const e32 = await p32.encodePrompts(['a red circle']);
    const e16 = await p16.encodePrompts(['a red circle']);
    assert.equal(e16.constructor, Float32Array);
    assert.ok(meanAbsDiff(e32, e16) < 2e-3, `fp16 text states differ by ${meanAbsDiff(e32, e16)}`);
    const c = await generate(p16, opts);
    c.forEach((img, k) =>
      assert.ok(meanAbsDiff(img.rgb, a[k].rgb) < 3, `fp16 image ${k} differs by ${meanAbsDiff(img.rgb, a[k].rgb)} levels on average`),
    );
    // optimum >= 1.24 layout: int64 ids, pooler_output beside last_hidden_state, rank-0 float timestep.
    const po = await loadPipeline(fx('tiny-sd-optimum'), { threads: 1 });
    try {
      assert.deepEqual(po.unetTimestep, { type: 'float32', form: 'scalar' });
      (await generate(po, opts)).forEach((img, k) => assert.deepEqual(img.rgb, a[k].rgb));
    } finally {
      await po.close();
    }
    // Euler's fractional timesteps are rounded for an int64 timestep: it still runs.
    const e = await generate(p64, { ...opts, scheduler: 'euler' });
    assert.equal(e.length, 2);
  } finally {
    await Promise.all([p32.close(), p64.close(), p16.close()]);
  }
});

test('embedded model: same seed same bytes, different seeds differ, int64-timestep copy runs', {
  skip: haveEmbedded ? false : `embedded model not present at ${embedded}`,
}, async () => {
  const p = await loadPipeline(undefined, { threads: 1 });
  try {
    assert.equal(p.dir, embedded);
    const opts = { prompts: ['a red circle'], seeds: [0, 1], steps: 3, guidance: 7.5, height: 32, width: 32 };
    const a = await generate(p, opts);
    const b = await generate(p, opts);
    assert.deepEqual(a[0].rgb, b[0].rgb);
    assert.deepEqual(a[1].rgb, b[1].rgb);
    assert.notDeepEqual(a[0].rgb, a[1].rgb);
    // An int64-timestep copy of the embedded UNet (Cast to float inserted), built with the ONNX codec.
    const codec = await import('../lib/model/onnx/index.js');
    const { model } = await codec.loadModel(p.unetPath);
    const g = model.graph;
    const ts = g.input.find((i) => i.name === 'timestep');
    ts.type.tensorType.elemType = 7; // INT64
    for (const n of g.node) n.input = n.input.map((name) => (name === 'timestep' ? 'timestep_as_float' : name));
    g.node.unshift({
      input: ['timestep'],
      output: ['timestep_as_float'],
      name: 'timestep_cast',
      opType: 'Cast',
      attribute: [
        { name: 'to', type: 2, i: 1, floats: [], ints: [], strings: [], tensors: [], graphs: [], typeProtos: [], sparseTensors: [] },
      ],
    });
    const q = await p.withUnet({ modelBytes: codec.encodeModel(model) });
    try {
      assert.equal(q.unetTimestep.type, 'int64');
      const c = await generate(q, opts);
      a.forEach((img, k) => assert.deepEqual(c[k].rgb, img.rgb, 'integer PNDM timesteps: int64 feed must not change the image'));
    } finally {
      await q.close();
    }
  } finally {
    await p.close();
  }
});

// A full-fp16 copy of a pipeline folder made with the ONNX codec: every float initializer, Constant and value type
// (subgraphs included) becomes float16, Cast-to-float becomes Cast-to-float16; Resize's roi/scales stay float32.
async function fp16Copy(src) {
  const codec = await import('../lib/model/onnx/index.js');
  const FLOAT = 1;
  const FLOAT16 = 10;
  const half = (t, dir) => {
    const v = codec.tensorToFloat32(t, dir).map((x) => Math.max(-65504, Math.min(65504, x)));
    t.dataType = FLOAT16;
    codec.setTensorFloat32(t, v);
  };
  const convert = (g, dir) => {
    const keep = new Set(
      g.node
        .filter((n) => n.opType === 'Resize')
        .flatMap((n) => n.input.slice(1, 3))
        .filter((x) => x),
    );
    for (const t of g.initializer) if (t.dataType === FLOAT && !keep.has(t.name)) half(t, dir);
    for (const n of g.node) {
      if (n.opType === 'Constant' && keep.has(n.output[0])) continue;
      for (const a of n.attribute) {
        if (n.opType === 'Cast' && a.name === 'to' && Number(a.i) === FLOAT) a.i = FLOAT16;
        if (a.t !== undefined && a.t.dataType === FLOAT) half(a.t, dir);
        if (a.g !== undefined) convert(a.g, dir);
        for (const sub of a.graphs) convert(sub, dir);
      }
    }
    for (const v of [...g.input, ...g.output, ...g.valueInfo]) {
      if (v.type?.tensorType?.elemType === FLOAT && !keep.has(v.name)) v.type.tensorType.elemType = FLOAT16;
    }
  };
  const out = join(mkdtempSync(join(tmpdir(), 'fp16-')), 'model');
  cpSync(src, out, { recursive: true });
  for (const sub of ['text_encoder', 'unet', 'vae_decoder']) {
    const path = join(out, sub, 'model.onnx');
    const { model, dir } = await codec.loadModel(path);
    convert(model.graph, dir);
    writeFileSync(path, codec.encodeModel(model));
  }
  return out;
}

test('embedded model: a full-fp16 copy loads, runs and stays close to fp32', {
  skip: haveEmbedded ? false : `embedded model not present at ${embedded}`,
}, async () => {
  const dir = await fp16Copy(embedded);
  const p32 = await loadPipeline(undefined, { threads: 1 });
  const p16 = await loadPipeline(dir, { threads: 1 });
  try {
    assert.equal(p16.unetTimestep.type, 'float16');
    const opts = { prompts: ['a red circle'], seeds: [0, 1], steps: 2, guidance: 7.5, height: 32, width: 32 };
    const a = await generate(p32, opts);
    const b = await generate(p16, opts);
    const again = await generate(p16, opts);
    b.forEach((img, k) => {
      assert.deepEqual(again[k].rgb, img.rgb, 'fp16 is deterministic too');
      const diff = meanAbsDiff(img.rgb, a[k].rgb);
      assert.ok(diff < 2, `fp16 image ${k} differs from fp32 by ${diff} levels on average`);
    });
  } finally {
    await Promise.all([p32.close(), p16.close()]);
  }
});

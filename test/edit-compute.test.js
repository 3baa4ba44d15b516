// computeEdit: rows built from aligned embeddings of the pair and its augmentations (checked against a fake
// text encoder whose embeddings encode (prompt, position)), preservation rows, bad input, and the native solver
// agreeing with the TypeScript float64 reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildRows, computeEdit } from '../lib/edit/compute.js';
import { referenceSolver, defaultSolver } from '../lib/solver/select.js';
import { fakeTokenizer as tokenizer } from './fake-tokenizer.js';

const d = 4;
// Embedding of prompt p at position i: [promptIndex, i, hash(p), 1] (promptIndex counted over every call).
function fakeEncoder() {
  const seen = [];
  return {
    tokenizer,
    seen,
    async encodePrompts(prompts) {
      seen.push(prompts);
      const out = new Float32Array(prompts.length * 77 * d);
      prompts.forEach((p, k) => {
        for (let i = 0; i < 77; i++) out.set([k, i, p.length, 1], (k * 77 + i) * d);
      });
      return out;
    },
  };
}

test('rows: source positions paired with aligned destination positions, for the pair and every augmentation', async () => {
  const enc = fakeEncoder();
  const r = await buildRows(enc, { pairs: [{ source: 'a circle', destination: 'a blue circle' }] });
  assert.deepEqual(enc.seen[0], [
    'a circle',
    'a blue circle',
    'A photo of a circle',
    'A photo of a blue circle',
    'An image of a circle',
    'An image of a blue circle',
    'A picture of a circle',
    'A picture of a blue circle',
  ]);
  assert.equal(r.rows, 4 * 77);
  assert.equal(r.d, d);
  // Row 2 of the first prompt: source 'circle' at position 2 ↔ destination position 3.
  assert.deepEqual([...r.source.subarray(2 * d, 3 * d)], [0, 2, 8, 1]);
  assert.deepEqual([...r.destination.subarray(2 * d, 3 * d)], [1, 3, 13, 1]);
  // Last row of the first prompt maps to position 76.
  assert.deepEqual([...r.destination.subarray(76 * d, 77 * d)], [1, 76, 13, 1]);
  // Augmented 'A photo of a circle': bos a photo of a circle eos → circle (pos 5) ↔ pos 6 of the destination.
  const base = 77 * d;
  assert.deepEqual([...r.source.subarray(base + 5 * d, base + 6 * d)], [2, 5, 19, 1]);
  assert.deepEqual([...r.destination.subarray(base + 5 * d, base + 6 * d)], [3, 6, 24, 1]);
});

test('preservation prompts add rows whose target is their own embedding; no augmentation on request', async () => {
  const enc = fakeEncoder();
  const r = await buildRows(enc, {
    pairs: [{ source: 'a circle', destination: 'a blue circle' }],
    augmentations: [],
    preserve: ['a square'],
  });
  assert.deepEqual(enc.seen[0], ['a circle', 'a blue circle', 'a square']);
  assert.equal(r.rows, 2 * 77);
  assert.deepEqual([...r.source.subarray(77 * d)], [...r.destination.subarray(77 * d)]);
  assert.deepEqual([...r.source.subarray(77 * d, 78 * d)], [2, 0, 8, 1]);
});

test('bad input: λ ≤ 0, no pairs, empty prompts, unknown source word', async () => {
  const enc = fakeEncoder();
  const pair = { source: 'a circle', destination: 'a blue circle' };
  await assert.rejects(buildRows(enc, { pairs: [pair], lambda: 0 }), /λ must be a number > 0/);
  await assert.rejects(buildRows(enc, { pairs: [pair], lambda: -1 }), /λ must be a number > 0/);
  await assert.rejects(buildRows(enc, { pairs: [] }), /no edit pair/);
  await assert.rejects(buildRows(enc, { pairs: [{ source: '', destination: 'a circle' }] }), /must not be empty/);
  await assert.rejects(buildRows(enc, { pairs: [{ source: 'a square', destination: 'a blue circle' }] }), /source word 'square'/);
  assert.equal(enc.seen.length, 0, 'nothing is encoded before the input is checked');
});

test('computeEdit: native solver (when built) equals the float64 reference; edit carries its metadata', async () => {
  const enc = {
    tokenizer,
    async encodePrompts(prompts) {
      // Smooth pseudo-random embeddings so the solve is well posed.
      const out = new Float32Array(prompts.length * 77 * 16);
      prompts.forEach((p, k) => {
        for (let i = 0; i < 77 * 16; i++) out[k * 77 * 16 + i] = Math.sin(0.37 * i + p.length * 1.3 + k) * 0.5;
      });
      return out;
    },
  };
  const req = { pairs: [{ source: 'a circle', destination: 'a blue circle' }], lambda: 0.1, mode: 'v' };
  const ref = await computeEdit(enc, req, referenceSolver, 'fp');
  const nat = await computeEdit(enc, req, await defaultSolver(), 'fp');
  assert.equal(ref.edit.d, 16);
  assert.equal(ref.edit.steps[0].mode, 'v');
  assert.equal(ref.edit.steps[0].rows, 308);
  assert.deepEqual(ref.edit.steps[0].augmentations, ['A photo of ', 'An image of ', 'A picture of ']);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < ref.edit.steps[0].G.length; i++) {
    err = Math.max(err, Math.abs(ref.edit.steps[0].G[i] - nat.edit.steps[0].G[i]));
    scale = Math.max(scale, Math.abs(ref.edit.steps[0].G[i]));
  }
  assert.ok(err <= 1e-4 * scale, `native vs reference G: ${err} (scale ${scale})`);
});

test('a prompt over 75 tokens is truncated as SD does and produces a warning, not an error', async () => {
  const long = Array.from({ length: 80 }, (_, i) => (i % 2 ? 'circle' : 'a')).join(' ');
  const r = await buildRows(fakeEncoder(), { pairs: [{ source: long, destination: `a blue ${long}` }], augmentations: [] });
  assert.equal(r.rows, 77);
  assert.equal(r.warnings.length, 2);
  assert.match(r.warnings[0], /longer than 75 tokens and was truncated, as Stable Diffusion does/);
});

// Edit values and edit files: safetensors layout checked byte by byte, save/load round trip, refusal of
// another model's edit, corrupt files, and the algebra of the low-rank form against float64 references.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeSafetensors, decodeSafetensors } from '../lib/edit/safetensors.js';
import { saveEdit, loadEdit } from '../lib/edit/edit-file.js';
import { transformRows, denseMatrix, chainEdits } from '../lib/edit/edit.js';

function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}
function randomStep(d, n, seed, mode = 'kv') {
  const r = rng(seed);
  return {
    pairs: [{ source: 'a circle', destination: 'a blue circle' }],
    preserve: [],
    lambda: 0.1,
    augmentations: ['A photo of '],
    mode,
    rows: n,
    D: Float32Array.from({ length: n * d }, () => r() * 0.3),
    G: Float32Array.from({ length: n * d }, () => r() * 0.3),
  };
}

test('safetensors layout: header length, padded JSON header, little-endian data', () => {
  const bytes = encodeSafetensors({
    tensors: new Map([['x', { dtype: 'F32', shape: [2], data: Float32Array.from([1, -2]) }]]),
    metadata: { k: 'v' },
  });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(header, { __metadata__: { k: 'v' }, x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } });
  assert.deepEqual([...bytes.subarray(8 + n)], [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
  const back = decodeSafetensors(bytes);
  assert.deepEqual([...back.tensors.get('x').data], [1, -2]);
  assert.deepEqual(back.metadata, { k: 'v' });
});

test('edit file round trip, refusal for another model, corrupt files rejected', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-file-'));
  try {
    const edit = { d: 5, fingerprint: 'abc123', steps: [randomStep(5, 3, 1), randomStep(5, 2, 2, 'v')] };
    const path = join(dir, 'e.safetensors');
    saveEdit(path, edit);
    assert.deepEqual(readdirSync(dir), ['e.safetensors']);
    const back = await loadEdit(path, 'abc123');
    assert.equal(back.d, 5);
    assert.deepEqual(
      back.steps.map((s) => [s.mode, s.rows, s.lambda]),
      [
        ['kv', 3, 0.1],
        ['v', 2, 0.1],
      ],
    );
    assert.deepEqual([...back.steps[1].G], [...edit.steps[1].G]);
    assert.deepEqual(back.steps[0].pairs, edit.steps[0].pairs);
    await assert.rejects(loadEdit(path, 'ffff'), /made for a different model/);
    writeFileSync(join(dir, 'bad'), Buffer.from('not a safetensors file at all'));
    await assert.rejects(loadEdit(join(dir, 'bad')), /not a safetensors file|corrupt header/);
    const cut = readFileSync(path).subarray(0, 200);
    writeFileSync(join(dir, 'cut'), cut);
    await assert.rejects(loadEdit(join(dir, 'cut')), /not a safetensors file|does not fit/);
    await assert.rejects(loadEdit(join(dir, 'missing')), /cannot read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// float64 reference: M = I + DᵀG per step, product in order, E → E·Mᵀ.
function refDense(d, steps) {
  let m = Array.from({ length: d }, (_, i) => Array.from({ length: d }, (_, j) => (i === j ? 1 : 0)));
  for (const s of steps) {
    const step = Array.from({ length: d }, (_, i) =>
      Array.from({ length: d }, (_, j) => {
        let acc = i === j ? 1 : 0;
        for (let r = 0; r < s.rows; r++) acc += s.D[r * d + i] * s.G[r * d + j];
        return acc;
      }),
    );
    m = m.map((row) => step[0].map((_, j) => row.reduce((acc, v, k) => acc + v * step[k][j], 0)));
  }
  return m;
}

test('low-rank application equals the dense product; composition multiplies in order; V-only steps skip K', () => {
  const d = 6;
  const a = { d, fingerprint: 'f', steps: [randomStep(d, 4, 3)] };
  const b = { d, fingerprint: 'f', steps: [randomStep(d, 2, 4)] };
  const c = chainEdits(a, b);
  const ref = refDense(d, c.steps);
  const dense = denseMatrix(c, 'k');
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) assert.ok(Math.abs(dense[i * d + j] - ref[i][j]) < 1e-12);
  const r = rng(9);
  const E = Float32Array.from({ length: 3 * d }, () => r());
  const out = transformRows(c, E, 'v');
  for (let row = 0; row < 3; row++)
    for (let i = 0; i < d; i++) {
      let want = 0;
      for (let k = 0; k < d; k++) want += E[row * d + k] * ref[i][k]; // (E·Mᵀ)[row][i] = Σ_k E[row][k]·M[i][k]
      assert.ok(Math.abs(out[row * d + i] - want) < 1e-5, `row ${row} col ${i}`);
    }
  const vOnly = { d, fingerprint: 'f', steps: [randomStep(d, 4, 3, 'v')] };
  assert.deepEqual([...transformRows(vOnly, E, 'k')], [...E]);
  assert.notDeepEqual([...transformRows(vOnly, E, 'v')], [...E]);
  assert.throws(() => chainEdits(a, { ...b, fingerprint: 'g' }), /different models/);
});

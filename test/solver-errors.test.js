// Bad input to the solver API and to the raw addon: each case is rejected with a TypeError/RangeError whose message
// names the argument, the process stays alive, and no output buffer is written.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';

import { applyToEmbeddings, composeTransforms, patchWeights, solveEdits } from '../lib/index.js';
import { locateAddon } from '../lib/solver/addon-location.js';

const d = 4;
const good = () => ({ source: new Float32Array([1, 2, 3, 4, 0, 1, 0, 1]), destination: new Float32Array([1, 2, 3, 5, 0, 1, 1, 1]) });
const W = () => ({ data: Float32Array.from({ length: 3 * d }, (_, i) => (i % 5) - 2), rows: 3 });
const sentinel = () => new Float32Array(3 * d).fill(7);

async function rejects(promiseFn, type, pattern) {
  await assert.rejects(promiseFn, (err) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err?.constructor?.name}: ${err?.message}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('solveEdits rejects bad input', () => {
  const cases = [
    ['d not a number', () => solveEdits('4', [good()]), TypeError, /^d must be an integer, got string/],
    ['d fractional', () => solveEdits(2.5, [good()]), RangeError, /^d must be an integer ≥ 1, got 2.5/],
    ['d zero', () => solveEdits(0, [good()]), RangeError, /^d must be an integer ≥ 1/],
    ['edits not an array', () => solveEdits(d, good()), TypeError, /^edits must be an array/],
    ['no edits', () => solveEdits(d, []), RangeError, /^edits is empty/],
    [
      'source a Float64Array',
      () => solveEdits(d, [{ ...good(), source: new Float64Array(8) }]),
      TypeError,
      /^edits\[0\]\.source must be a Float32Array, got a Float64Array/,
    ],
    [
      'source a plain array',
      () => solveEdits(d, [{ ...good(), source: [1, 2, 3, 4] }]),
      TypeError,
      /^edits\[0\]\.source must be a Float32Array, got an array/,
    ],
    [
      'destination missing',
      () => solveEdits(d, [{ source: good().source }]),
      TypeError,
      /^edits\[0\]\.destination must be a Float32Array, got undefined/,
    ],
    [
      'mismatched lengths',
      () => solveEdits(d, [{ ...good(), destination: new Float32Array(4) }]),
      RangeError,
      /^edits\[0\]\.destination has 4 values but edits\[0\]\.source has 8/,
    ],
    ['length not a multiple of d', () => solveEdits(3, [good()]), RangeError, /^edits\[0\]\.source has 8 values, not a multiple of d = 3/],
    [
      'n = 0',
      () => solveEdits(d, [{ source: new Float32Array(0), destination: new Float32Array(0) }]),
      RangeError,
      /^edits\[0\]\.source is empty/,
    ],
    [
      'rows inconsistent',
      () => solveEdits(d, [{ ...good(), rows: 3 }]),
      RangeError,
      /^edits\[0\]\.rows is 3 but edits\[0\]\.source holds 2 rows/,
    ],
    ['λ = 0', () => solveEdits(d, [{ ...good(), lambda: 0 }]), RangeError, /^edits\[0\]\.lambda must be finite and > 0, got 0/],
    ['λ < 0', () => solveEdits(d, [good(), { ...good(), lambda: -1 }]), RangeError, /^edits\[1\]\.lambda must be finite and > 0, got -1/],
    ['λ NaN', () => solveEdits(d, [{ ...good(), lambda: NaN }]), RangeError, /^edits\[0\]\.lambda must be finite and > 0, got NaN/],
    ['λ a string', () => solveEdits(d, [{ ...good(), lambda: '0.1' }]), TypeError, /^edits\[0\]\.lambda must be a number/],
    [
      'NaN in source',
      () => solveEdits(d, [{ ...good(), source: new Float32Array([1, NaN, 3, 4, 0, 1, 0, 1]) }]),
      RangeError,
      /^edits\[0\]\.source contains a non-finite value \(NaN\) at index 1 \(row 0, column 1\)/,
    ],
    [
      'Inf in destination',
      () => solveEdits(d, [good(), { ...good(), destination: new Float32Array([1, 2, 3, 4, 0, 1, Infinity, 1]) }]),
      RangeError,
      /^edits\[1\]\.destination contains a non-finite value \(Infinity\) at index 6 \(row 1, column 2\)/,
    ],
    [
      'weights d mismatch',
      () => solveEdits(d, [good()], { weights: { data: new Float32Array(10), rows: 2 } }),
      RangeError,
      /^opts\.weights\.data has 10 values but rows × d = 2 × 4 = 8/,
    ],
    [
      'weights not Float32Array',
      () => solveEdits(d, [good()], { weights: { data: [1, 2, 3, 4], rows: 1 } }),
      TypeError,
      /^opts\.weights\.data must be a Float32Array/,
    ],
    ['nothing asked', () => solveEdits(d, [good()], { lowRank: false }), RangeError, /^nothing to compute/],
    [
      'unknown backend',
      () => solveEdits(d, [good()], { backend: 'gpu' }),
      RangeError,
      /^opts\.backend must be one of cpu, cpu-portable, cuda; got 'gpu'/,
    ],
  ];
  for (const [label, call, type, pattern] of cases) it(label, () => rejects(call, type, pattern));

  it('NaN/Inf in the weights, or an output aliasing the weights: rejected and nothing written', async () => {
    const out = sentinel();
    const bad = W();
    bad.data[5] = -Infinity;
    await rejects(
      () => solveEdits(d, [good()], { weights: bad, out: [{ patched: out }] }),
      RangeError,
      /^opts\.weights\.data contains a non-finite value \(-Infinity\) at index 5 \(row 1, column 1\)/,
    );
    assert.deepEqual(out, sentinel());
    const w = W();
    await rejects(
      () => solveEdits(d, [good()], { weights: w, out: [{ patched: w.data }] }),
      RangeError,
      /^patched\[0\] shares memory with weights/,
    );
    assert.deepEqual(w.data, W().data);
    await rejects(
      () => solveEdits(d, [good()], { weights: W(), out: [{ patched: new Float32Array(5) }] }),
      RangeError,
      /^opts\.out\[0\]\.patched must have 12 values, got 5/,
    );
    const e = good();
    await rejects(
      () => solveEdits(d, [e], { out: [{ G: e.source }] }),
      RangeError,
      /^outG\[0\] shares memory with sources\[0\]: outputs must be separate buffers/,
    );
    assert.deepEqual(e.source, good().source);
    await rejects(() => solveEdits(d, [good()], { out: [] }), RangeError, /^opts\.out must be an array of 1 output objects/);
    // A bad edit anywhere in the batch stops the whole batch before anything is written.
    const outs = [sentinel(), sentinel()];
    await rejects(
      () =>
        solveEdits(d, [good(), { ...good(), source: new Float32Array([0, 0, 0, NaN, 0, 0, 0, 0]) }], {
          weights: W(),
          out: outs.map((patched) => ({ patched })),
        }),
      RangeError,
      /^edits\[1\]\.source/,
    );
    assert.deepEqual(outs, [sentinel(), sentinel()]);
  });

  it('the process is alive and the solver still works after all of the above', async () => {
    const [edit] = await solveEdits(d, [good()], { weights: W() });
    assert.equal(edit.patched.length, 12);
    assert.ok(edit.patched.every(Number.isFinite));
  });
});

describe('patchWeights / applyToEmbeddings / composeTransforms reject bad input', () => {
  it('checks shapes and types, writes nothing', async () => {
    const [edit] = await solveEdits(d, [good()], { dense: true });
    const out = sentinel();
    await rejects(
      () => patchWeights({ data: new Float32Array(10), rows: 2 }, edit, { out }),
      RangeError,
      /^weights\.data has 10 values but rows × d = 2 × 4 = 8/,
    );
    await rejects(() => patchWeights(W(), { d: 5, dense: edit.dense }), RangeError, /^edit\.dense must have d × d = 25 values, got 16/);
    await rejects(() => patchWeights(W(), { d }), RangeError, /^edit has neither a low-rank form nor a dense M/);
    await rejects(() => patchWeights(W(), null), TypeError, /^edit must be a solved edit, got null/);
    const nanM = edit.dense.slice();
    nanM[3] = NaN;
    await rejects(() => patchWeights(W(), { d, dense: nanM }, { out }), RangeError, /^edit\.dense contains a non-finite value/);
    assert.deepEqual(out, sentinel());
    await rejects(() => applyToEmbeddings(new Float32Array(6), edit), RangeError, /^embeddings has 6 values, not a multiple of d = 4/);
    await rejects(() => applyToEmbeddings(new Float64Array(8), edit), TypeError, /^embeddings must be a Float32Array, got a Float64Array/);
    const E = new Float32Array([1, NaN, 0, 0]);
    const eOut = new Float32Array(4).fill(7);
    await rejects(() => applyToEmbeddings(E, edit, { out: eOut }), RangeError, /^embeddings contains a non-finite value/);
    assert.deepEqual(eOut, new Float32Array(4).fill(7));
    const [other] = await solveEdits(3, [{ source: new Float32Array(3).fill(1), destination: new Float32Array(3).fill(2) }]);
    await rejects(() => composeTransforms(edit, other), RangeError, /^a\.d \(4\) and b\.d \(3\) differ/);
  });
});

describe('the raw addon checks its arguments too', () => {
  const addon = createRequire(import.meta.url)(locateAddon());
  const e = good();
  it('throws TypeError/RangeError synchronously, naming the argument', () => {
    assert.throws(() => addon.solve('cpu', 4, [e.source], [new Float64Array(8)], [0.1], [null], [null], [null], null, []), {
      name: 'TypeError',
      message: /^destinations\[0\] must be a Float32Array, got a Float64Array/,
    });
    assert.throws(() => addon.solve('cpu', 4, [e.source], [e.destination], [0], [null], [null], [null], null, []), {
      name: 'RangeError',
      message: /^lambdas\[0\] must be finite and > 0, got 0/,
    });
    assert.throws(() => addon.solve('cpu', 4, [e.source], [e.destination], [0.1, 0.2], [null], [null], [null], null, []), {
      name: 'RangeError',
      message: /^lambdas has 2 entries but sources has 1/,
    });
    assert.throws(() => addon.solve('tpu', 4, [], [], [], [], [], [], null, []), { name: 'RangeError', message: /^backend must be/ });
    assert.throws(() => addon.solve(), { name: 'TypeError', message: /^backend must be a string/ });
    assert.throws(() => addon.applyDense('cpu', 4, new Float32Array(4), new Float32Array(16), 'yes', new Float32Array(4)), {
      name: 'TypeError',
      message: /^transpose must be a boolean/,
    });
    assert.throws(() => addon.sgemm('cuda', 1, 1, 1, new Float32Array(1), new Float32Array(1), new Float32Array(1)), {
      name: 'RangeError',
      message: /runs on the CPU/,
    });
    assert.throws(() => addon.setThreads('cpu', 0), { name: 'RangeError', message: /^threads must be between 1 and 1024/ });
  });
});

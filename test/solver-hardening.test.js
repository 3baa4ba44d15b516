// Defects of the solver API that fuzzing found (docs/fuzzing.md), one block each: a valid low-rank-only edit on
// the dense route, buffers that can shrink under a pending call, non-finite values in any buffer (used by the
// call or not), sparse and huge `edits` arrays, denseOf's stored M and backend, `opts` of the wrong type, results
// that overflow float32, and the message for a rank-deficient system. Results are checked against the float64
// reference of test/solver-reference.js; refusals by class and by the argument the message names.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

import { applyToEmbeddings, composeTransforms, denseOf, patchWeights, solveEdits } from '../lib/index.js';
import { referenceG } from '../lib/solver/reference.js';
import { matmul, referenceM, relErr, rng } from './solver-reference.js';

const root = new URL('..', import.meta.url);

async function rejects(promiseFn, type, pattern) {
  await assert.rejects(promiseFn, (err) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err?.constructor?.name}: ${err?.message}`);
    assert.match(err.message, pattern);
    return true;
  });
}

/** A small well-conditioned edit of width d with n rows: { source, destination }. */
function editInput(seed, d, n, scale = 0.3) {
  const r = rng(seed);
  const source = r.f32(n * d, scale);
  const destination = source.map((v) => v + 0.5 * scale * r.normal());
  return { source, destination };
}

/** A copy of `a` over a resizable ArrayBuffer or a growable SharedArrayBuffer. */
function resizable(a, shared = false) {
  const options = { maxByteLength: a.byteLength + 64 };
  const buffer = shared ? new SharedArrayBuffer(a.byteLength, options) : new ArrayBuffer(a.byteLength, options);
  const view = new Float32Array(buffer);
  view.set(a);
  return view;
}

/** Runs an ES module snippet in a child node (cwd = repository root) and returns { status, signal, stdout, stderr }. */
function runChild(source, timeout = 60_000) {
  return spawnSync(process.execPath, ['--input-type=module', '-e', source], { cwd: root, encoding: 'utf8', timeout });
}

describe('a low-rank-only edit on the dense route (n > (d − 1)/2, many rows)', () => {
  // The embedded model's shapes: d = 128, a 308-row edit (4 prompts × 77), one guidance pair of 2 × 77 rows.
  const d = 128,
    n = 308,
    lambda = 0.1;
  const input = editInput(11, d, n, 0.05);
  const want = referenceM(input.source, input.destination, n, d, lambda);

  for (const rows of [2 * 77, 16 * 77]) {
    it(`applyToEmbeddings forms M from (D, G) for ${rows} rows and matches E·Mᵀ`, async () => {
      const [edit] = await solveEdits(d, [{ ...input, lambda }]);
      assert.equal(edit.dense, undefined);
      const E = rng(rows).f32(rows * d);
      const got = await applyToEmbeddings(E, { d, lowRank: edit.lowRank });
      const ref = matmul(E, want, rows, d, d, { transB: true });
      assert.ok(relErr(got, ref) < 1e-4, `relative error ${relErr(got, ref)}`);
    });
  }

  it('patchWeights agrees (it already derived M)', async () => {
    const [edit] = await solveEdits(d, [{ ...input, lambda }]);
    const W = rng(5).f32(200 * d);
    const got = await patchWeights({ data: W, rows: 200 }, { d, lowRank: edit.lowRank });
    assert.ok(relErr(got, matmul(W, want, 200, d, d)) < 1e-4);
  });
});

describe('buffers that can change size are refused at the boundary', () => {
  const d = 4;
  const msg = (name) =>
    new RegExp(
      `^${name.replace(/[[\].]/g, '\\$&')} is backed by a (resizable ArrayBuffer|growable SharedArrayBuffer); copy it into a fixed-size Float32Array first`,
    );
  const base = () => editInput(3, d, 2);
  const W = () => ({ data: rng(4).f32(3 * d), rows: 3 });

  it('every array argument of solveEdits, inputs and outputs', async () => {
    for (const shared of [false, true]) {
      await rejects(() => solveEdits(d, [{ ...base(), source: resizable(base().source, shared) }]), TypeError, msg('edits[0].source'));
      await rejects(
        () => solveEdits(d, [base(), { ...base(), destination: resizable(base().destination, shared) }]),
        TypeError,
        msg('edits[1].destination'),
      );
      await rejects(
        () => solveEdits(d, [base()], { weights: { data: resizable(W().data, shared), rows: 3 } }),
        TypeError,
        msg('opts.weights.data'),
      );
      for (const key of ['D', 'G']) {
        await rejects(
          () => solveEdits(d, [base()], { out: [{ [key]: resizable(new Float32Array(2 * d), shared) }] }),
          TypeError,
          msg(`opts.out[0].${key}`),
        );
      }
      await rejects(
        () => solveEdits(d, [base()], { dense: true, out: [{ dense: resizable(new Float32Array(d * d), shared) }] }),
        TypeError,
        msg('opts.out[0].dense'),
      );
      await rejects(
        () => solveEdits(d, [base()], { weights: W(), out: [{ patched: resizable(new Float32Array(3 * d), shared) }] }),
        TypeError,
        msg('opts.out[0].patched'),
      );
    }
  });

  it('every array argument of patchWeights, applyToEmbeddings, composeTransforms and denseOf', async () => {
    const [edit] = await solveEdits(d, [base()], { dense: true });
    const withResizable = (key) => {
      const e = { d, dense: edit.dense, lowRank: { ...edit.lowRank } };
      if (key === 'dense') e.dense = resizable(e.dense);
      else e.lowRank[key] = resizable(e.lowRank[key], true);
      return e;
    };
    for (const [key, path] of [
      ['dense', 'dense'],
      ['D', 'lowRank.D'],
      ['G', 'lowRank.G'],
    ]) {
      await rejects(() => patchWeights(W(), withResizable(key)), TypeError, msg(`edit.${path}`));
      await rejects(() => applyToEmbeddings(new Float32Array(d), withResizable(key)), TypeError, msg(`edit.${path}`));
      await rejects(() => denseOf(withResizable(key)), TypeError, msg(`edit.${path}`));
      await rejects(() => composeTransforms(withResizable(key), edit), TypeError, msg(`a.${path}`));
      await rejects(() => composeTransforms(edit, withResizable(key)), TypeError, msg(`b.${path}`));
    }
    await rejects(() => patchWeights({ data: resizable(W().data), rows: 3 }, edit), TypeError, msg('weights.data'));
    await rejects(() => patchWeights(W(), edit, { out: resizable(new Float32Array(3 * d), true) }), TypeError, msg('opts.out'));
    await rejects(() => applyToEmbeddings(resizable(new Float32Array(2 * d), true), edit), TypeError, msg('embeddings'));
    await rejects(
      () => applyToEmbeddings(new Float32Array(2 * d), edit, { out: resizable(new Float32Array(2 * d)) }),
      TypeError,
      msg('opts.out'),
    );
  });

  it('shrinking one while a call is pending cannot crash the process (checked in a child)', () => {
    // A long call first, then one on a resizable buffer that is shrunk to 0 bytes while it waits its turn.
    const child = runChild(`
      import { applyToEmbeddings, solveEdits } from './lib/index.js';
      const d = 256, rows = 16384;
      const source = Float32Array.from({ length: 4 * d }, (_, i) => Math.sin(i));
      const [edit] = await solveEdits(d, [{ source, destination: source.map((v) => 1.1 * v) }], { dense: true });
      const long = applyToEmbeddings(new Float32Array(rows * d).fill(0.25), edit);
      const buffer = new ArrayBuffer(rows * d * 4, { maxByteLength: rows * d * 4 });
      const pending = applyToEmbeddings(new Float32Array(buffer).fill(0.5), edit).then(() => 'accepted', (e) => e.constructor.name + ': ' + e.message);
      buffer.resize(0);
      await long;
      console.log(await pending);`);
    assert.equal(child.signal, null, `child died by ${child.signal}: ${child.stderr}`);
    assert.equal(child.status, 0, child.stderr);
    assert.match(child.stdout, /^TypeError: embeddings is backed by a resizable ArrayBuffer/);
  });
});

describe('NaN and ±∞ are refused in every buffer, naming it and the first bad index', () => {
  const d = 4;
  const base = () => editInput(7, d, 2);
  const nonFinite = (name, value, row, col) =>
    new RegExp(
      `^${name.replace(/[[\].]/g, '\\$&')} contains a non-finite value \\(${value}\\) at index ${row * d + col} \\(row ${row}, column ${col}\\)`,
    );

  it('composeTransforms checks all four low-rank factors (a.D was passed through)', async () => {
    const [a, b] = await solveEdits(d, [base(), editInput(8, d, 3)]);
    for (const [which, key] of [
      ['a', 'D'],
      ['a', 'G'],
      ['b', 'D'],
      ['b', 'G'],
    ]) {
      for (const value of [NaN, Infinity, -Infinity]) {
        const x = { d, lowRank: { ...a.lowRank, D: a.lowRank.D.slice(), G: a.lowRank.G.slice() } };
        const y = { d, lowRank: { ...b.lowRank, D: b.lowRank.D.slice(), G: b.lowRank.G.slice() } };
        (which === 'a' ? x : y).lowRank[key][5] = value;
        await rejects(() => composeTransforms(x, y), RangeError, nonFinite(`${which}.lowRank.${key}`, value, 1, 1));
      }
    }
  });

  it('a form the call does not use is checked too', async () => {
    const [edit] = await solveEdits(d, [base()], { dense: true });
    const W = { data: rng(2).f32(3 * d), rows: 3 };
    const badD = { ...edit, lowRank: { ...edit.lowRank, D: edit.lowRank.D.slice() } };
    badD.lowRank.D[2] = NaN;
    await rejects(() => patchWeights({ data: rng(2).f32(500 * d), rows: 500 }, badD), RangeError, nonFinite('edit.lowRank.D', NaN, 0, 2));
    await rejects(() => denseOf(badD), RangeError, nonFinite('edit.lowRank.D', NaN, 0, 2));
    const badM = { ...edit, dense: edit.dense.slice() };
    badM.dense[d + 3] = Infinity;
    await rejects(() => patchWeights(W, badM), RangeError, nonFinite('edit.dense', Infinity, 1, 3));
    await rejects(() => applyToEmbeddings(new Float32Array(d), badM), RangeError, nonFinite('edit.dense', Infinity, 1, 3));
  });

  it("inputs name the caller's argument, not the addon's parameter, and nothing is written", async () => {
    const [edit] = await solveEdits(d, [base()], { dense: true });
    const src = base();
    src.source[6] = -Infinity;
    await rejects(() => solveEdits(d, [base(), src]), RangeError, nonFinite('edits[1].source', -Infinity, 1, 2));
    const W = { data: rng(2).f32(3 * d), rows: 3 };
    W.data[4] = NaN;
    const out = new Float32Array(3 * d).fill(7);
    await rejects(() => patchWeights(W, edit, { out }), RangeError, nonFinite('weights.data', NaN, 1, 0));
    await rejects(
      () => solveEdits(d, [base()], { weights: W, out: [{ patched: out }] }),
      RangeError,
      nonFinite('opts.weights.data', NaN, 1, 0),
    );
    await rejects(
      () => applyToEmbeddings(new Float32Array([0, 0, 0, 0, 0, NaN, 0, 0]), edit, { out: out.subarray(0, 2 * d) }),
      RangeError,
      nonFinite('embeddings', NaN, 1, 1),
    );
    assert.ok(out.every((v) => v === 7));
  });

  it('finite inputs whose result overflows float32 are refused, not returned as ∞', async () => {
    const huge = base();
    huge.destination[1] = 3e38;
    huge.source[1] = -3e38; // D = C* − C = 6e38 > FLT_MAX
    await rejects(() => solveEdits(d, [huge]), RangeError, /overflows float32/);
    const twice = new Float32Array(d * d);
    for (let i = 0; i < d; i++) twice[i * d + i] = 2;
    const W = { data: new Float32Array(3 * d).fill(3e38), rows: 3 };
    await rejects(() => patchWeights(W, { d, dense: twice }), RangeError, /overflows float32/);
    await rejects(() => applyToEmbeddings(W.data, { d, dense: twice }), RangeError, /overflows float32/);
  });
});

describe('solveEdits: sparse and huge edits arrays', () => {
  const d = 4;
  it('a hole is refused by its index, not skipped', async () => {
    const edits = new Array(3);
    edits[0] = editInput(1, d, 2);
    await rejects(() => solveEdits(d, edits), TypeError, /^edits\[1\] must be \{source, destination\}, got undefined/);
    const late = new Array(2);
    late[1] = editInput(1, d, 2);
    await rejects(() => solveEdits(d, late, { weights: { data: new Float32Array(d), rows: 1 } }), TypeError, /^edits\[0\] must be/);
    const out = new Array(1);
    await rejects(() => solveEdits(d, [editInput(1, d, 2)], { out }), TypeError, /^opts\.out\[0\] must be an object/);
  });

  it('new Array(2³² − 1) is refused by its length at once (in a child, so a regression cannot hang the runner)', () => {
    const child = runChild(
      `
      import { solveEdits } from './lib/index.js';
      const t = Date.now();
      const message = await solveEdits(4, new Array(2 ** 32 - 1)).then(() => 'accepted', (e) => e.constructor.name + ': ' + e.message);
      console.log(JSON.stringify({ message, ms: Date.now() - t }));`,
      20_000,
    );
    assert.equal(child.status, 0, `status ${child.status}, signal ${child.signal}: ${child.stderr}`);
    const { message, ms } = JSON.parse(child.stdout);
    assert.match(message, /^RangeError: edits has 4294967295 entries: at most 1000000 edits per call/);
    assert.ok(ms < 1000, `took ${ms} ms`);
  });
});

describe('denseOf', () => {
  const d = 3;
  it('checks a stored dense M and its backend argument before returning it', async () => {
    const [edit] = await solveEdits(d, [editInput(2, d, 2)], { dense: true });
    assert.equal(await denseOf(edit), edit.dense);
    await rejects(() => denseOf(edit, 'gpu'), RangeError, /^backend must be 'cpu' or 'cpu-portable'.*got 'gpu'/);
    await rejects(
      () => denseOf(edit, 'cuda'),
      RangeError,
      /^backend must be 'cpu' or 'cpu-portable' \(denseOf runs on the CPU\), got 'cuda'/,
    );
    await rejects(() => denseOf(edit, 5), TypeError, /^backend must be 'cpu' or 'cpu-portable', got number/);
    const bad = { d, dense: edit.dense.slice() };
    bad.dense[4] = NaN;
    await rejects(() => denseOf(bad), RangeError, /^edit\.dense contains a non-finite value \(NaN\) at index 4 \(row 1, column 1\)/);
  });
});

describe("opts of patchWeights and applyToEmbeddings must be an object, as solveEdits' are", () => {
  const d = 3;
  for (const opts of [null, 5, 'x', true]) {
    it(`opts = ${JSON.stringify(opts)}`, async () => {
      const [edit] = await solveEdits(d, [editInput(2, d, 2)], { dense: true });
      const want = new RegExp(`^opts must be an object, got ${opts === null ? 'null' : typeof opts}`);
      await rejects(() => patchWeights({ data: new Float32Array(d), rows: 1 }, edit, opts), TypeError, want);
      await rejects(() => applyToEmbeddings(new Float32Array(d), edit, opts), TypeError, want);
      await rejects(() => solveEdits(d, [editInput(2, d, 2)], opts), TypeError, want);
    });
  }
});

describe('a rank-deficient C with negligible λ says so', () => {
  // Three equal rows (rank 1): λI + C·Cᵀ = λI + 4·𝟙𝟙ᵀ, whose second Cholesky pivot is λ·(…) — 0 in float64 for λ = 1e-30.
  const d = 4,
    n = 3,
    lambda = 1e-30;
  const source = new Float32Array(n * d).fill(1);
  const wanted =
    /the system λI \+ CCᵀ is not positive definite in float64 \(λ = 1e-30, n = 3\): λ is too small for C's rank; use a larger λ/;

  it('the TypeScript float64 reference solver', () => {
    assert.throws(
      () => referenceG(source, n, d, lambda),
      (err) => err instanceof RangeError && wanted.test(err.message),
    );
  });

  it('the native solver', async () => {
    await rejects(() => solveEdits(d, [{ source, destination: source.map((v) => v + 1), lambda }]), RangeError, wanted);
  });
});

// The native TIME solver against an independent float64 reference (test/solver-reference.js), on every CPU backend
// this build has (OpenBLAS and the portable kernels), plus the solution's defining properties.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { applyToEmbeddings, availableBackends, composeTransforms, denseOf, patchWeights, solveEdits, solverBackend } from '../lib/index.js';
import { frob, matmul, referenceM, relErr, rng } from './solver-reference.js';

const backends = availableBackends().filter((b) => b.kind !== 'cuda' || process.env.TIME_EDIT_TEST_CUDA === '1');

// Cases: n < d, n = d, n > d, n = 1; λ small to large. Rows scaled like unit-norm embeddings.
const cases = [
  { d: 6, n: 2, lambda: 0.1, R: 5 },
  { d: 16, n: 5, lambda: 0.5, R: 11 },
  { d: 16, n: 40, lambda: 1, R: 7 },
  { d: 33, n: 33, lambda: 0.05, R: 9 },
  { d: 24, n: 1, lambda: 2, R: 30 },
  { d: 9, n: 60, lambda: 0.01, R: 4 },
];

function makeCase({ d, n, R }, seed) {
  const r = rng(seed);
  const s = 1 / Math.sqrt(d);
  const C = r.f32(n * d, s);
  const noise = r.f32(n * d, 0.5 * s);
  const Cs = C.map((v, i) => v + noise[i]);
  return { C, Cs, W: r.f32(R * d, 0.2), E: r.f32(3 * d, s) };
}

// ‖λ(W'−W) + (W'Cᵀ − WC*ᵀ)C‖ / ‖λW‖: the TIME objective's gradient (halved) at W', relative.
function optimalityResidual(W, Wp, C, Cs, R, n, d, lambda) {
  const WpCt = matmul(Wp, C, R, d, n, { transB: true });
  const WCst = matmul(W, Cs, R, d, n, { transB: true });
  const diff = WpCt.map((v, i) => v - WCst[i]);
  const grad = matmul(diff, C, R, n, d);
  for (let i = 0; i < grad.length; i++) grad[i] += lambda * (Wp[i] - W[i]);
  return frob(grad) / (lambda * frob(W));
}

for (const backend of backends) {
  describe(`solver on ${backend.name}`, () => {
    for (const [index, cs] of cases.entries()) {
      const { d, n, lambda, R } = cs;
      it(`d=${d} n=${n} λ=${lambda}: M, low-rank form, patched weights and embeddings match float64`, async () => {
        const { C, Cs, W, E } = makeCase(cs, 100 + index);
        const Mref = referenceM(C, Cs, n, d, lambda);
        const [edit] = await solveEdits(d, [{ source: C, destination: Cs, lambda }], {
          lowRank: true,
          dense: true,
          weights: { data: W, rows: R },
          backend: backend.kind,
        });
        assert.equal(edit.d, d);
        assert.deepEqual(edit.lambdas, [lambda]);
        assert.ok(relErr(edit.dense, Mref) < 2e-6, `dense M: ${relErr(edit.dense, Mref)}`);
        const fromLowRank = matmul(edit.lowRank.D, edit.lowRank.G, d, n, d, { transA: true });
        for (let i = 0; i < d; i++) fromLowRank[i * d + i] += 1;
        assert.ok(relErr(fromLowRank, Mref) < 2e-6, `I + DᵀG: ${relErr(fromLowRank, Mref)}`);
        const Wref = matmul(W, Mref, R, d, d);
        assert.ok(relErr(edit.patched, Wref) < 2e-6, `W': ${relErr(edit.patched, Wref)}`);

        // patchWeights from the low-rank form only and from the dense M only.
        const viaLowRank = await patchWeights({ data: W, rows: R }, { d, lowRank: edit.lowRank }, { backend: backend.kind });
        const viaDense = await patchWeights({ data: W, rows: R }, { d, dense: edit.dense }, { backend: backend.kind });
        assert.ok(relErr(viaLowRank, Wref) < 2e-6, `patchWeights(low-rank): ${relErr(viaLowRank, Wref)}`);
        assert.ok(relErr(viaDense, Wref) < 2e-6, `patchWeights(dense): ${relErr(viaDense, Wref)}`);

        // Embedding form: E·Mᵀ, and (E·Mᵀ)·Wᵀ = E·W'ᵀ (what the UNet's K/V projections compute).
        const m = E.length / d;
        const Eref = matmul(E, Mref, m, d, d, { transB: true });
        for (const form of [
          { d, lowRank: edit.lowRank },
          { d, dense: edit.dense },
        ]) {
          const Ep = await applyToEmbeddings(E, form, { backend: backend.kind });
          assert.ok(relErr(Ep, Eref) < 2e-6, `E·Mᵀ: ${relErr(Ep, Eref)}`);
          const kv = matmul(Ep, W, m, d, R, { transB: true });
          const kvEdited = matmul(E, edit.patched, m, d, R, { transB: true });
          assert.ok(relErr(kv, kvEdited) < 1e-5, `E·Mᵀ·Wᵀ vs E·W'ᵀ: ${relErr(kv, kvEdited)}`);
        }

        // The TIME objective's gradient vanishes at the solution: ≤ 1e-5, or (tiny λ, where merely rounding the
        // exact solution to float32 leaves more) within 4× of what the float32-rounded exact solution achieves.
        const residual = optimalityResidual(W, edit.patched, C, Cs, R, n, d, lambda);
        const roundingFloor = optimalityResidual(W, Float32Array.from(Wref), C, Cs, R, n, d, lambda);
        assert.ok(residual < Math.max(1e-5, 4 * roundingFloor), `optimality residual ${residual} (float32 floor ${roundingFloor})`);
        if (lambda >= 0.05) assert.ok(residual < 1e-5, `optimality residual ${residual}`);
      });
    }

    it('the solution minimises the TIME objective (perturbations only increase it)', async () => {
      const d = 12,
        n = 4,
        R = 6,
        lambda = 0.3;
      const { C, Cs, W } = makeCase({ d, n, R }, 7);
      const [edit] = await solveEdits(d, [{ source: C, destination: Cs, lambda }], {
        weights: { data: W, rows: R },
        backend: backend.kind,
      });
      const objective = (Wp) => {
        const a = matmul(Wp, C, R, d, n, { transB: true });
        const b = matmul(W, Cs, R, d, n, { transB: true });
        let f = 0;
        for (let i = 0; i < a.length; i++) f += (a[i] - b[i]) ** 2;
        for (let i = 0; i < W.length; i++) f += lambda * (Wp[i] - W[i]) ** 2;
        return f;
      };
      const best = objective(edit.patched);
      assert.ok(best < objective(W));
      const r = rng(8);
      for (let t = 0; t < 5; t++) {
        const P = Float64Array.from(edit.patched, (v) => v + 1e-3 * r.normal());
        assert.ok(objective(P) > best);
      }
    });

    it('λ → ∞ leaves the weights unchanged', async () => {
      const d = 10,
        n = 3,
        R = 8;
      const { C, Cs, W } = makeCase({ d, n, R }, 9);
      let previous = Infinity;
      for (const lambda of [1, 1e3, 1e6, 1e9]) {
        const [edit] = await solveEdits(d, [{ source: C, destination: Cs, lambda }], {
          weights: { data: W, rows: R },
          backend: backend.kind,
        });
        const change = relErr(edit.patched, W);
        assert.ok(change < previous, `change ${change} at λ=${lambda} should shrink`);
        previous = change;
      }
      assert.ok(previous < 1e-7, `at λ=1e9 W' differs from W by ${previous}`);
    });

    it("C* = C gives W' = W, M = I and E·Mᵀ = E exactly", async () => {
      for (const { d, n, R } of [
        { d: 8, n: 3, R: 5 },
        { d: 8, n: 20, R: 5 },
      ]) {
        const { C, W, E } = makeCase({ d, n, R }, 11);
        const [edit] = await solveEdits(d, [{ source: C, destination: C.slice() }], {
          dense: true,
          weights: { data: W, rows: R },
          backend: backend.kind,
        });
        assert.deepEqual(edit.patched, W);
        const eye = new Float32Array(d * d);
        for (let i = 0; i < d; i++) eye[i * d + i] = 1;
        assert.deepEqual(edit.dense, eye);
        assert.deepEqual(await applyToEmbeddings(E, { d, lowRank: edit.lowRank }), E);
        assert.deepEqual(await patchWeights({ data: W, rows: R }, { d, dense: edit.dense }, { backend: backend.kind }), W);
      }
    });

    it('writes into caller-provided output buffers (opts.out) and returns them', async () => {
      const d = 10,
        n = 4,
        R = 6;
      const { C, Cs, W } = makeCase({ d, n, R }, 13);
      const out = {
        D: new Float32Array(n * d),
        G: new Float32Array(n * d),
        dense: new Float32Array(d * d),
        patched: new Float32Array(R * d),
      };
      const [edit] = await solveEdits(d, [{ source: C, destination: Cs }], {
        dense: true,
        weights: { data: W, rows: R },
        out: [out],
        backend: backend.kind,
      });
      assert.equal(edit.lowRank.D, out.D);
      assert.equal(edit.lowRank.G, out.G);
      assert.equal(edit.dense, out.dense);
      assert.equal(edit.patched, out.patched);
      const [fresh] = await solveEdits(d, [{ source: C, destination: Cs }], {
        dense: true,
        weights: { data: W, rows: R },
        backend: backend.kind,
      });
      assert.deepEqual(fresh.lowRank, edit.lowRank);
      assert.deepEqual(fresh.patched, edit.patched);
    });

    it('a batch of edits equals the same edits solved one by one', async () => {
      const d = 14,
        R = 9;
      const r = rng(21);
      const W = r.f32(R * d);
      const edits = [3, 20, 1].map((n, i) => ({ source: r.f32(n * d), destination: r.f32(n * d), lambda: 0.1 * (i + 1) }));
      const opts = { dense: true, weights: { data: W, rows: R }, backend: backend.kind };
      const batch = await solveEdits(d, edits, opts);
      assert.equal(batch.length, 3);
      for (const [i, e] of edits.entries()) {
        const [single] = await solveEdits(d, [e], opts);
        assert.deepEqual(batch[i].lowRank, single.lowRank);
        assert.deepEqual(batch[i].dense, single.dense);
        assert.deepEqual(batch[i].patched, single.patched);
      }
    });
  });
}

describe('concurrency', () => {
  it('many calls in flight at once (Promise.all) give the same results as one at a time', async () => {
    const d = 32,
      R = 16;
    const r = rng(41);
    const W = r.f32(R * d);
    const edits = Array.from({ length: 12 }, (_, i) => ({
      source: r.f32((i + 1) * 3 * d),
      destination: r.f32((i + 1) * 3 * d),
      lambda: 0.2,
    }));
    const together = await Promise.all(edits.map((e) => solveEdits(d, [e], { weights: { data: W, rows: R } })));
    for (const [i, e] of edits.entries()) {
      const [alone] = await solveEdits(d, [e], { weights: { data: W, rows: R } });
      assert.deepEqual(together[i][0].patched, alone.patched);
    }
  });
});

describe('composition', () => {
  it('composeTransforms(a, b) equals applying a then b (weights) and matches M_a·M_b in float64', async () => {
    const d = 20,
      R = 7;
    const r = rng(31);
    const W = r.f32(R * d, 0.2);
    const E = r.f32(4 * d, 0.2);
    const mk = (n, lambda) => ({ source: r.f32(n * d, 0.3), destination: r.f32(n * d, 0.3), lambda, n });
    const ea = mk(4, 0.2),
      eb = mk(30, 0.5);
    const [a, b] = await solveEdits(d, [ea, eb], { dense: true });
    const Mab = matmul(referenceM(ea.source, ea.destination, 4, d, 0.2), referenceM(eb.source, eb.destination, 30, d, 0.5), d, d, d);
    const sequential = await patchWeights({ data: await patchWeights({ data: W, rows: R }, a), rows: R }, b);
    for (const [label, x, y] of [
      ['low-rank', { d, lowRank: a.lowRank }, { d, lowRank: b.lowRank }],
      ['dense', { d, dense: a.dense }, { d, dense: b.dense }],
      ['mixed', { d, lowRank: a.lowRank }, { d, dense: b.dense }],
      ['full', a, b],
    ]) {
      const ab = await composeTransforms(x, y);
      const viaCompose = await patchWeights({ data: W, rows: R }, ab);
      assert.ok(relErr(viaCompose, sequential) < 1e-5, `${label}: composed vs sequential ${relErr(viaCompose, sequential)}`);
      assert.ok(relErr(await denseOf(ab), Mab) < 1e-5, `${label}: M_a·M_b ${relErr(await denseOf(ab), Mab)}`);
      if (ab.lowRank) assert.equal(ab.lowRank.rows, 34);
      // Embeddings: E·(M_a·M_b)ᵀ = (E·M_bᵀ)·M_aᵀ.
      const eSeq = await applyToEmbeddings(await applyToEmbeddings(E, b), a);
      assert.ok(relErr(await applyToEmbeddings(E, ab), eSeq) < 1e-5, `${label}: embeddings`);
    }
    assert.deepEqual((await composeTransforms(a, b)).lambdas, [0.2, 0.5]);
  });
});

describe('backend choice', () => {
  it('reports the CPU backend, and TIME_EDIT_BACKEND=cuda fails clearly when CUDA is unavailable', () => {
    const saved = process.env.TIME_EDIT_BACKEND;
    try {
      delete process.env.TIME_EDIT_BACKEND;
      const all = availableBackends();
      assert.ok(all.some((b) => b.kind === 'cpu' && b.name.startsWith('cpu-')));
      process.env.TIME_EDIT_BACKEND = 'cpu';
      assert.equal(solverBackend().kind, 'cpu');
      process.env.TIME_EDIT_BACKEND = 'gpu';
      assert.throws(() => solverBackend(), /TIME_EDIT_BACKEND must be one of cpu, cpu-portable, cuda; got 'gpu'/);
      process.env.TIME_EDIT_BACKEND = 'cuda';
      if (all.some((b) => b.kind === 'cuda')) assert.equal(solverBackend().kind, 'cuda');
      else assert.throws(() => solverBackend(), /TIME_EDIT_BACKEND=cuda, but (this build of time-edit has no CUDA backend|no CUDA device)/);
    } finally {
      if (saved === undefined) delete process.env.TIME_EDIT_BACKEND;
      else process.env.TIME_EDIT_BACKEND = saved;
    }
  });
});

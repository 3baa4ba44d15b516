// minimumNormSolve (lib/edit/lora-linalg.ts) against references computed here: for S = WᵀW with zero columns the
// minimum-norm solution is the reduced system's solution padded with zeros; for a general rank-deficient S the
// solution must satisfy S·Y = B and lie in the row space of W (no component in its null space), which is what
// "minimum norm" means (Penrose, "A generalized inverse for matrices", 1955).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { minimumNormSolve } from '../lib/edit/lora-linalg.js';

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}
const mul = (a, b, m, k, n) => {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
};
const transpose = (a, m, n) => {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
};
/** Gauss–Jordan with partial pivoting: A⁻¹·B for a small nonsingular A (n × n), B (n × m). */
function solve(a, b, n, m) {
  const A = Float64Array.from(a);
  const B = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let i = c + 1; i < n; i++) if (Math.abs(A[i * n + c]) > Math.abs(A[p * n + c])) p = i;
    for (let j = 0; j < n; j++) [A[c * n + j], A[p * n + j]] = [A[p * n + j], A[c * n + j]];
    for (let j = 0; j < m; j++) [B[c * m + j], B[p * m + j]] = [B[p * m + j], B[c * m + j]];
    for (let i = 0; i < n; i++) {
      if (i === c) continue;
      const f = A[i * n + c] / A[c * n + c];
      for (let j = 0; j < n; j++) A[i * n + j] -= f * A[c * n + j];
      for (let j = 0; j < m; j++) B[i * m + j] -= f * B[c * m + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) B[i * m + j] /= A[i * n + i];
  return B;
}
const maxAbs = (a) => a.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
const diff = (a, b) => a.map((v, i) => v - b[i]);

test('zero columns: the reduced least-squares solution, zero on the ignored inputs', () => {
  const r = rng(7);
  const rows = 20,
    n = 9,
    m = 3;
  const live = [0, 2, 3, 5, 8]; // columns 1, 4, 6, 7 are zero, like weights that ignore some inputs
  const W = new Float64Array(rows * n);
  for (let i = 0; i < rows; i++) for (const j of live) W[i * n + j] = r();
  const R = Float64Array.from({ length: rows * m }, r);
  const Wt = transpose(W, rows, n);
  const S = mul(Wt, W, n, rows, n);
  const B = mul(Wt, R, n, rows, m);
  const { x, rank } = minimumNormSolve(S, B, n, m);
  assert.equal(rank, live.length);
  // Reference: the normal equations restricted to the live columns.
  const k = live.length;
  const Wl = new Float64Array(rows * k);
  for (let i = 0; i < rows; i++) live.forEach((j, q) => (Wl[i * k + q] = W[i * n + j]));
  const Wlt = transpose(Wl, rows, k);
  const yl = solve(mul(Wlt, Wl, k, rows, k), mul(Wlt, R, k, rows, m), k, m);
  const want = new Float64Array(n * m);
  live.forEach((j, q) => {
    for (let c = 0; c < m; c++) want[j * m + c] = yl[q * m + c];
  });
  assert.ok(maxAbs(diff(x, want)) < 1e-10 * maxAbs(want), `max error ${maxAbs(diff(x, want))}`);
});

test('a general rank-deficient S: S·Y = B and Y has no component in the null space of W', () => {
  const r = rng(11);
  const rows = 30,
    n = 12,
    k = 5,
    m = 4;
  const V = Float64Array.from({ length: k * n }, r); // W = A·V: rank 5, row space spanned by V's rows
  const A = Float64Array.from({ length: rows * k }, r);
  const W = mul(A, V, rows, k, n);
  const Wt = transpose(W, rows, n);
  const S = mul(Wt, W, n, rows, n);
  const B = mul(Wt, Float64Array.from({ length: rows * m }, r), n, rows, m);
  const { x, rank } = minimumNormSolve(S, B, n, m);
  assert.equal(rank, k);
  const residual = diff(mul(S, x, n, n, m), B);
  assert.ok(maxAbs(residual) < 1e-9 * maxAbs(B), `residual ${maxAbs(residual)}`);
  // Null-space component: (I − Vᵀ(VVᵀ)⁻¹V)·Y must vanish.
  const Vt = transpose(V, k, n);
  const proj = mul(Vt, solve(mul(V, Vt, k, n, k), mul(V, x, k, n, m), k, m), n, k, m);
  assert.ok(maxAbs(diff(x, proj)) < 1e-9 * maxAbs(x), `null-space part ${maxAbs(diff(x, proj))}`);
});

test('full rank: the ordinary solution; zero matrix: zero', () => {
  const S = new Float64Array([4, 1, 1, 3]);
  const { x, rank } = minimumNormSolve(S, new Float64Array([1, 2]), 2, 1);
  assert.equal(rank, 2);
  assert.ok(Math.abs(x[0] - 1 / 11) < 1e-14 && Math.abs(x[1] - 7 / 11) < 1e-14, String(x));
  const zero = minimumNormSolve(new Float64Array(4), new Float64Array(2), 2, 1);
  assert.equal(zero.rank, 0);
  assert.deepEqual([...zero.x], [0, 0]);
});

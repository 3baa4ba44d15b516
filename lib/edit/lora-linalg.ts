// Dense float64 linear algebra for turning an edit into a LoRA: products, Gram matrices, an orthonormal basis of a
// set of rows, the symmetric eigendecomposition (Householder tridiagonalization, then the implicit symmetric QR
// step with Wilkinson's shift; Golub & Van Loan, "Matrix Computations", 4th ed., §8.3), and a Cholesky solve for
// least squares. Sizes here are at most a few thousand by 768, so plain TypeScript loops in float64 are enough
// (docs/lora.md gives the times); every matrix is row-major.
import { TimeEditError } from '../errors.js';

/**
 * Thrown when an iteration fails to converge or a matrix that must be positive definite is not; a TimeEditError, so
 * one that reaches the CLI is a one-line "work failed" (exit 1), not an internal error.
 */
export class LinalgError extends TimeEditError {
  override readonly name = 'LinalgError';
}

/**
 * C = A·B for A (m × k) and B (k × n), row-major.
 *
 * @example
 *   matmul(new Float64Array([1, 2]), new Float64Array([3, 4]), 1, 2, 1);   // [11]
 */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p]!;
      if (aip === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j]! += aip * b[bp + j]!;
    }
  }
  return c;
}

/**
 * C = A·Bᵀ for A (m × k) and B (n × k), row-major: dot products of rows.
 *
 * @example
 *   matmulTransB(new Float64Array([1, 2]), new Float64Array([3, 4]), 1, 2, 1);   // [11]
 */
export function matmulTransB(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      const ai = i * k;
      const bj = j * k;
      for (let p = 0; p < k; p++) s += a[ai + p]! * b[bj + p]!;
      c[i * n + j] = s;
    }
  return c;
}

/**
 * AᵀA (n × n) for A (m × n), row-major, accumulated row by row (symmetric; both triangles filled).
 *
 * @example
 *   gram(new Float64Array([1, 2, 3, 4]), 2, 2);   // [10, 14, 14, 20]
 */
export function gram(a: ArrayLike<number>, m: number, n: number): Float64Array {
  const g = new Float64Array(n * n);
  for (let r = 0; r < m; r++) {
    const ar = r * n;
    for (let i = 0; i < n; i++) {
      const x = a[ar + i]!;
      if (x === 0) continue;
      const gi = i * n;
      for (let j = i; j < n; j++) g[gi + j]! += x * a[ar + j]!;
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) g[i * n + j] = g[j * n + i]!;
  return g;
}

/**
 * An orthonormal basis (k' × d, k' ≤ min(k, d)) of the span of the k rows of R (k × d): modified Gram–Schmidt,
 * each row orthogonalized twice ("twice is enough", Giraud et al., Numer. Math. 2005), rows whose remainder is
 * below `relTol` of the largest row norm dropped as dependent.
 *
 * @example
 *   orthonormalRows(new Float64Array([2, 0, 4, 0]), 2, 2).rows;   // 1: the two rows are parallel
 */
export function orthonormalRows(r: ArrayLike<number>, k: number, d: number, relTol = 1e-12): { basis: Float64Array; rows: number } {
  let maxNorm = 0;
  for (let i = 0; i < k; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += r[i * d + j]! ** 2;
    maxNorm = Math.max(maxNorm, Math.sqrt(s));
  }
  const basis = new Float64Array(Math.min(k, d) * d);
  let count = 0;
  const v = new Float64Array(d);
  for (let i = 0; i < k && count < d; i++) {
    for (let j = 0; j < d; j++) v[j] = r[i * d + j]!;
    for (let pass = 0; pass < 2; pass++)
      for (let q = 0; q < count; q++) {
        const qo = q * d;
        let dot = 0;
        for (let j = 0; j < d; j++) dot += basis[qo + j]! * v[j]!;
        for (let j = 0; j < d; j++) v[j]! -= dot * basis[qo + j]!;
      }
    let norm = 0;
    for (let j = 0; j < d; j++) norm += v[j]! ** 2;
    norm = Math.sqrt(norm);
    if (!(norm > relTol * maxNorm) || norm === 0) continue;
    const bo = count * d;
    for (let j = 0; j < d; j++) basis[bo + j] = v[j]! / norm;
    count++;
  }
  return { basis: basis.subarray(0, count * d), rows: count };
}

/**
 * Eigenvalues (descending) and orthonormal eigenvectors of a symmetric n × n matrix (row-major; only symmetry is
 * assumed, the input is not modified). `vectors` is n × n with eigenvector j in column j.
 *
 * @example
 *   const { values } = symmetricEigen(new Float64Array([2, 1, 1, 2]), 2);   // [3, 1]
 */
export function symmetricEigen(input: ArrayLike<number>, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(input as ArrayLike<number>);
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  // Householder reflections H_k = I − β v vᵀ (v supported on k+1..n−1) zero column k below the subdiagonal:
  // A ← H A H = A − v wᵀ − w vᵀ with p = β A v, w = p − (β vᵀp / 2) v; Q ← Q H.
  for (let k = 0; k < n - 2; k++) {
    let xnorm = 0;
    for (let i = k + 1; i < n; i++) xnorm += a[i * n + k]! ** 2;
    xnorm = Math.sqrt(xnorm);
    if (xnorm === 0) continue;
    const x0 = a[(k + 1) * n + k]!;
    const alpha = x0 >= 0 ? -xnorm : xnorm;
    let vv = 0;
    for (let i = k + 1; i < n; i++) {
      v[i] = a[i * n + k]! - (i === k + 1 ? alpha : 0);
      vv += v[i]! ** 2;
    }
    if (vv === 0) continue;
    const beta = 2 / vv;
    let vp = 0;
    for (let i = k + 1; i < n; i++) {
      let s = 0;
      const ai = i * n;
      for (let j = k + 1; j < n; j++) s += a[ai + j]! * v[j]!;
      p[i] = beta * s;
      vp += v[i]! * p[i]!;
    }
    const kk = (beta * vp) / 2;
    for (let i = k + 1; i < n; i++) p[i]! -= kk * v[i]!;
    for (let i = k + 1; i < n; i++) {
      const ai = i * n;
      const vi = v[i]!;
      const wi = p[i]!;
      for (let j = k + 1; j < n; j++) a[ai + j]! -= vi * p[j]! + wi * v[j]!;
    }
    a[(k + 1) * n + k] = alpha;
    a[k * n + k + 1] = alpha;
    for (let i = k + 2; i < n; i++) {
      a[i * n + k] = 0;
      a[k * n + i] = 0;
    }
    for (let r = 0; r < n; r++) {
      const qr = r * n;
      let s = 0;
      for (let j = k + 1; j < n; j++) s += q[qr + j]! * v[j]!;
      if (s === 0) continue;
      s *= beta;
      for (let j = k + 1; j < n; j++) q[qr + j]! -= s * v[j]!;
    }
  }
  const diag = new Float64Array(n);
  const off = new Float64Array(Math.max(n - 1, 0));
  for (let i = 0; i < n; i++) diag[i] = a[i * n + i]!;
  for (let i = 0; i + 1 < n; i++) off[i] = a[i * n + i + 1]!;
  tridiagonalQr(diag, off, q, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => diag[y]! - diag[x]!);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = diag[src]!;
    for (let r = 0; r < n; r++) vectors[r * n + dst] = q[r * n + src]!;
  });
  return { values, vectors };
}

/** Implicit symmetric QR steps with Wilkinson's shift on a tridiagonal (diag, off), rotations accumulated into z's columns. */
function tridiagonalQr(diag: Float64Array, off: Float64Array, z: Float64Array, n: number): void {
  const eps = 2.220446049250313e-16;
  let hi = n - 1;
  let iterations = 0;
  while (hi > 0) {
    if (Math.abs(off[hi - 1]!) <= eps * (Math.abs(diag[hi - 1]!) + Math.abs(diag[hi]!)) || Math.abs(off[hi - 1]!) < 1e-300) {
      off[hi - 1] = 0;
      hi--;
      continue;
    }
    let lo = hi - 1;
    while (lo > 0) {
      const e = Math.abs(off[lo - 1]!);
      if (e <= eps * (Math.abs(diag[lo - 1]!) + Math.abs(diag[lo]!)) || e < 1e-300) {
        off[lo - 1] = 0;
        break;
      }
      lo--;
    }
    if (++iterations > 50 * n) throw new LinalgError(`the eigenvalue iteration did not converge (n = ${n})`);
    const delta = (diag[hi - 1]! - diag[hi]!) / 2;
    const b = off[hi - 1]!;
    const mu = diag[hi]! - (b * b) / (delta + (delta >= 0 ? 1 : -1) * Math.hypot(delta, b));
    let x = diag[lo]! - mu;
    let y = off[lo]!;
    for (let k = lo; k < hi; k++) {
      const r = Math.hypot(x, y);
      const c = r === 0 ? 1 : x / r;
      const s = r === 0 ? 0 : y / r;
      if (k > lo) off[k - 1] = r;
      const dk = diag[k]!;
      const ek = off[k]!;
      const dk1 = diag[k + 1]!;
      diag[k] = c * c * dk + 2 * c * s * ek + s * s * dk1;
      diag[k + 1] = s * s * dk - 2 * c * s * ek + c * c * dk1;
      off[k] = c * s * (dk1 - dk) + (c * c - s * s) * ek;
      if (k + 1 < hi) {
        y = s * off[k + 1]!;
        off[k + 1] = c * off[k + 1]!;
        x = off[k]!;
      }
      for (let row = 0; row < n; row++) {
        const zo = row * n;
        const zk = z[zo + k]!;
        const zk1 = z[zo + k + 1]!;
        z[zo + k] = c * zk + s * zk1;
        z[zo + k + 1] = -s * zk + c * zk1;
      }
    }
  }
}

/**
 * Solves S·X = B for a symmetric positive definite S (n × n) and B (n × m), by Cholesky in float64.
 * Throws LinalgError when S is not positive definite (a rank-deficient least-squares problem).
 *
 * @example
 *   choleskySolve(new Float64Array([4, 0, 0, 9]), new Float64Array([8, 9]), 2, 1);   // [2, 1]
 */
export function choleskySolve(s: ArrayLike<number>, b: ArrayLike<number>, n: number, m: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let diagonal = s[j * n + j]!;
    for (let p = 0; p < j; p++) diagonal -= l[j * n + p]! ** 2;
    if (!(diagonal > 0)) throw new LinalgError(`the matrix is not positive definite (pivot ${j} is ${diagonal})`);
    const ljj = Math.sqrt(diagonal);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let x = s[i * n + j]!;
      for (let p = 0; p < j; p++) x -= l[i * n + p]! * l[j * n + p]!;
      l[i * n + j] = x / ljj;
    }
  }
  const x = Float64Array.from(b as ArrayLike<number>);
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) {
      let t = x[i * m + c]!;
      for (let p = 0; p < i; p++) t -= l[i * n + p]! * x[p * m + c]!;
      x[i * m + c] = t / l[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let t = x[i * m + c]!;
      for (let p = i + 1; p < n; p++) t -= l[p * n + i]! * x[p * m + c]!;
      x[i * m + c] = t / l[i * n + i]!;
    }
  }
  return x;
}

/**
 * The minimum-norm solution Y = S⁺·B of S·Y = B for a symmetric positive semidefinite S (n × n) and B (n × m) in
 * the range of S (as the right side of least-squares normal equations always is). Cholesky with complete pivoting
 * stops at the numerical rank r (the largest remaining pivot ≤ relTol × the largest diagonal), giving
 * S = Πᵀ·L·Lᵀ·Π with L (n × r) of full column rank; then S⁺ = Πᵀ·L·(LᵀL)⁻²·Lᵀ·Π (Golub & Van Loan, "Matrix
 * Computations", 4th ed., §4.2.8 on pivoted Cholesky, §5.5 on the pseudo-inverse). It is what a least-squares fit
 * needs when whole columns of the data are zero, e.g. weights that ignore some of their inputs.
 *
 * @example
 *   minimumNormSolve(new Float64Array([1, 0, 0, 0]), new Float64Array([2, 0]), 2, 1);   // [2, 0]
 */
export function minimumNormSolve(
  s: ArrayLike<number>,
  b: ArrayLike<number>,
  n: number,
  m: number,
  relTol = 1e-12,
): { x: Float64Array; rank: number } {
  const a = Float64Array.from(s as ArrayLike<number>);
  const perm = Array.from({ length: n }, (_, i) => i);
  let largest = 0;
  for (let i = 0; i < n; i++) largest = Math.max(largest, a[i * n + i]!);
  // Outer-product pivoted Cholesky on a working copy: column j of L ends in a[perm[i]*n + perm[j]] for i ≥ j.
  const l = new Float64Array(n * n); // l[i*n + j]: row i of the permuted L
  let rank = 0;
  const diag = new Float64Array(n);
  for (let i = 0; i < n; i++) diag[i] = a[i * n + i]!;
  for (let j = 0; j < n; j++) {
    let best = j;
    for (let i = j + 1; i < n; i++) if (diag[perm[i]!]! > diag[perm[best]!]!) best = i;
    const pivot = diag[perm[best]!]!;
    if (!(pivot > relTol * largest) || !(largest > 0)) break;
    [perm[j], perm[best]] = [perm[best]!, perm[j]!];
    for (let p = 0; p < j; p++) [l[j * n + p], l[best * n + p]] = [l[best * n + p]!, l[j * n + p]!];
    const ljj = Math.sqrt(pivot);
    l[j * n + j] = ljj;
    const pj = perm[j]!;
    for (let i = j + 1; i < n; i++) {
      const pi = perm[i]!;
      let x = a[pi * n + pj]!;
      for (let p = 0; p < j; p++) x -= l[i * n + p]! * l[j * n + p]!;
      const lij = x / ljj;
      l[i * n + j] = lij;
      diag[pi]! -= lij * lij;
    }
    rank++;
  }
  const r = rank;
  const x = new Float64Array(n * m);
  if (r === 0) return { x, rank };
  // G = LᵀL (r × r), positive definite; T = Lᵀ·Π·B (r × m); Y_Π = L·G⁻¹·G⁻¹·T.
  const g = new Float64Array(r * r);
  for (let i = 0; i < n; i++)
    for (let p = 0; p < r; p++) {
      const lip = l[i * n + p]!;
      if (lip === 0) continue;
      for (let q = p; q < r; q++) g[p * r + q]! += lip * l[i * n + q]!;
    }
  for (let p = 0; p < r; p++) for (let q = 0; q < p; q++) g[p * r + q] = g[q * r + p]!;
  const t = new Float64Array(r * m);
  for (let i = 0; i < n; i++) {
    const bi = perm[i]! * m;
    for (let p = 0; p < r; p++) {
      const lip = l[i * n + p]!;
      if (lip !== 0) for (let c = 0; c < m; c++) t[p * m + c]! += lip * b[bi + c]!;
    }
  }
  const u = choleskySolve(g, choleskySolve(g, t, r, m), r, m);
  for (let i = 0; i < n; i++) {
    const xi = perm[i]! * m;
    for (let p = 0; p < r; p++) {
      const lip = l[i * n + p]!;
      if (lip !== 0) for (let c = 0; c < m; c++) x[xi + c]! += lip * u[p * m + c]!;
    }
  }
  return { x, rank };
}

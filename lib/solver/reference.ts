// A plain-TypeScript float64 reference of the TIME solve: what `bench solve` measures each native result against,
// and the edit layer's fallback solver when the addon is not built. Independent of the native code (own Cholesky
// and substitutions); slow (O(n²d + d²n) in JS).

/** G = (λI + C·Cᵀ)⁻¹·C in float64 for C n × d (Cholesky of the n × n matrix, forward and back substitution). */
export function referenceG(C: Float32Array, n: number, d: number, lambda: number): Float64Array {
  const S = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let p = 0; p < d; p++) s += C[i * d + p]! * C[j * d + p]!;
      S[i * n + j] = s + (i === j ? lambda : 0);
    }
  }
  for (let j = 0; j < n; j++) {
    // S = L·Lᵀ in place (lower triangle)
    let s = S[j * n + j]!;
    for (let p = 0; p < j; p++) s -= S[j * n + p]! ** 2;
    if (!(s > 0)) throw notPositiveDefinite(s, lambda, n);
    const diag = Math.sqrt(s);
    S[j * n + j] = diag;
    for (let i = j + 1; i < n; i++) {
      let v = S[i * n + j]!;
      for (let p = 0; p < j; p++) v -= S[i * n + p]! * S[j * n + p]!;
      S[i * n + j] = v / diag;
    }
  }
  const G = Float64Array.from(C);
  for (let i = 0; i < n; i++) {
    // L·Y = C
    for (let p = 0; p < i; p++) {
      const l = S[i * n + p]!;
      for (let j = 0; j < d; j++) G[i * d + j] = G[i * d + j]! - l * G[p * d + j]!;
    }
    const inv = 1 / S[i * n + i]!;
    for (let j = 0; j < d; j++) G[i * d + j] = G[i * d + j]! * inv;
  }
  for (let i = n - 1; i >= 0; i--) {
    // Lᵀ·G = Y
    for (let p = i + 1; p < n; p++) {
      const l = S[p * n + i]!;
      for (let j = 0; j < d; j++) G[i * d + j] = G[i * d + j]! - l * G[p * d + j]!;
    }
    const inv = 1 / S[i * n + i]!;
    for (let j = 0; j < d; j++) G[i * d + j] = G[i * d + j]! * inv;
  }
  return G;
}

// A pivot ≤ 0 from finite float32 rows is never an overflow (their squares stay far below float64's range): it is
// λ too small to lift the zero eigenvalues of a rank-deficient C·Cᵀ above float64's rounding.
function notPositiveDefinite(pivot: number, lambda: number, n: number): RangeError {
  if (!Number.isFinite(pivot)) {
    return new RangeError(`the system λI + CCᵀ has non-finite entries (λ = ${lambda}, n = ${n}): C holds NaN or ±∞`);
  }
  return new RangeError(
    `the system λI + CCᵀ is not positive definite in float64 (λ = ${lambda}, n = ${n}): λ is too small for C's rank; use a larger λ`,
  );
}

/** M = I + Dᵀ·G in float64 (D = C* − C computed in float64). */
export function referenceM(C: Float32Array, Cs: Float32Array, G: Float64Array, n: number, d: number): Float64Array {
  const M = new Float64Array(d * d);
  for (let i = 0; i < d; i++) M[i * d + i] = 1;
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      const dv = Cs[r * d + i]! - C[r * d + i]!;
      if (dv === 0) continue;
      for (let j = 0; j < d; j++) M[i * d + j] = M[i * d + j]! + dv * G[r * d + j]!;
    }
  }
  return M;
}

/** Rows `rows` of W·M (W stacked R × d, M d × d), float64. */
export function referenceRows(W: Float32Array, M: Float64Array, d: number, rows: number[]): Float64Array {
  const out = new Float64Array(rows.length * d);
  rows.forEach((r, k) => {
    for (let p = 0; p < d; p++) {
      const w = W[r * d + p]!;
      for (let j = 0; j < d; j++) out[k * d + j] = out[k * d + j]! + w * M[p * d + j]!;
    }
  });
  return out;
}

/** ‖got − want‖_F / ‖want‖_F (got restricted to `rows` of width d when given). */
export function relativeError(got: ArrayLike<number>, want: ArrayLike<number>, d = 0, rows?: number[]): number {
  let num = 0;
  let den = 0;
  for (let k = 0; k < want.length; k++) {
    const g = rows === undefined ? got[k]! : got[rows[Math.floor(k / d)]! * d + (k % d)]!;
    num += (g - want[k]!) ** 2;
    den += want[k]! ** 2;
  }
  return Math.sqrt(num / den);
}

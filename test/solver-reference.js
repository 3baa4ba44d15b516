// Independent float64 reference for the solver tests: the direct formula M = (λI + C*ᵀC)(λI + CᵀC)⁻¹ with a
// Gauss-Jordan inverse (not the push-through / Cholesky route the native code takes), plus seeded random data.
// Not a test file itself (no .test.js suffix).

export function rng(seed) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal, f32: (count, scale = 1) => Float32Array.from({ length: count }, () => normal() * scale) };
}

// A (m × k) · B (k × n), or with transposes given as stored shapes; float64 result.
export function matmul(A, B, m, k, n, { transA = false, transB = false } = {}) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const a = transA ? A[p * m + i] : A[i * k + p];
      if (a === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += a * (transB ? B[j * k + p] : B[p * n + j]);
    }
  return out;
}

export function inverse(A, n) {
  const a = Float64Array.from(A);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[piv * n + c])) piv = r;
    for (let j = 0; j < n; j++) {
      [a[c * n + j], a[piv * n + j]] = [a[piv * n + j], a[c * n + j]];
      [inv[c * n + j], inv[piv * n + j]] = [inv[piv * n + j], inv[c * n + j]];
    }
    const p = a[c * n + c];
    for (let j = 0; j < n; j++) {
      a[c * n + j] /= p;
      inv[c * n + j] /= p;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r * n + c];
      if (f === 0) continue;
      for (let j = 0; j < n; j++) {
        a[r * n + j] -= f * a[c * n + j];
        inv[r * n + j] -= f * inv[c * n + j];
      }
    }
  }
  return inv;
}

// M = (λI + C*ᵀC)(λI + CᵀC)⁻¹ (d × d, float64).
export function referenceM(C, Cs, n, d, lambda) {
  const A = matmul(Cs, C, d, n, d, { transA: true });
  const B = matmul(C, C, d, n, d, { transA: true });
  for (let i = 0; i < d; i++) {
    A[i * d + i] += lambda;
    B[i * d + i] += lambda;
  }
  return matmul(A, inverse(B, d), d, d, d);
}

export function relErr(got, want) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function frob(x) {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}

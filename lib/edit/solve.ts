// The TIME solve behind one interface: the native addon when it is built (lib/native.js), else a float64
// TypeScript reference (Cholesky of S = λI + CCᵀ, G = S⁻¹C), correct but slower, used by tests and as fallback.
import { EditError } from './edit.js';

export interface SolveItem {
  /** C, rows × d: source embeddings. */
  source: Float32Array;
  /** C*, rows × d: aligned destination embeddings. */
  destination: Float32Array;
  rows: number;
  lambda: number;
}

export interface LowRank {
  D: Float32Array;
  G: Float32Array;
}

export interface EditSolver {
  readonly name: string;
  solve(d: number, items: SolveItem[]): Promise<LowRank[]>;
}

function checkItem(d: number, it: SolveItem, i: number): void {
  if (!(Number.isFinite(it.lambda) && it.lambda > 0)) throw new EditError(`edit ${i}: λ must be a finite number > 0, got ${it.lambda}`);
  if (it.rows < 1) throw new EditError(`edit ${i}: no rows to solve for`);
  if (it.source.length !== it.rows * d || it.destination.length !== it.rows * d) throw new EditError(`edit ${i}: C and C* must be ${it.rows} × ${d}`);
}

/** Float64 reference solver in TypeScript: S = λI + CCᵀ (n × n), Cholesky, G = S⁻¹C, D = C* − C. */
export const referenceSolver: EditSolver = {
  name: 'typescript-float64',
  async solve(d, items) {
    return items.map((it, idx) => {
      checkItem(d, it, idx);
      const n = it.rows;
      const C = it.source;
      const S = new Float64Array(n * n);
      for (let i = 0; i < n; i++)
        for (let j = 0; j <= i; j++) {
          let acc = 0;
          const a = i * d;
          const b = j * d;
          for (let k = 0; k < d; k++) acc += C[a + k]! * C[b + k]!;
          S[i * n + j] = acc + (i === j ? it.lambda : 0);
        }
      // In-place Cholesky, lower triangle: S = L·Lᵀ.
      for (let j = 0; j < n; j++) {
        let diag = S[j * n + j]!;
        for (let k = 0; k < j; k++) diag -= S[j * n + k]! * S[j * n + k]!;
        if (!(diag > 0)) throw new EditError('the Gram matrix is not positive definite (non-finite embeddings?)');
        const l = Math.sqrt(diag);
        S[j * n + j] = l;
        for (let i = j + 1; i < n; i++) {
          let acc = S[i * n + j]!;
          for (let k = 0; k < j; k++) acc -= S[i * n + k]! * S[j * n + k]!;
          S[i * n + j] = acc / l;
        }
      }
      // G = S⁻¹C: forward then backward substitution, all d columns at once (row-major n × d).
      const Y = Float64Array.from(C);
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < i; k++) {
          const l = S[i * n + k]!;
          if (l !== 0) for (let c = 0; c < d; c++) Y[i * d + c]! -= l * Y[k * d + c]!;
        }
        const inv = 1 / S[i * n + i]!;
        for (let c = 0; c < d; c++) Y[i * d + c]! *= inv;
      }
      for (let i = n - 1; i >= 0; i--) {
        for (let k = i + 1; k < n; k++) {
          const l = S[k * n + i]!;
          if (l !== 0) for (let c = 0; c < d; c++) Y[i * d + c]! -= l * Y[k * d + c]!;
        }
        const inv = 1 / S[i * n + i]!;
        for (let c = 0; c < d; c++) Y[i * d + c]! *= inv;
      }
      const D = new Float32Array(n * d);
      for (let i = 0; i < n * d; i++) D[i] = it.destination[i]! - C[i]!;
      return { D, G: Float32Array.from(Y) };
    });
  },
};

let cached: EditSolver | undefined;

/** The native solver when lib/native.js loads, else the reference; `prefer: 'reference'` forces the latter. */
export async function defaultSolver(prefer?: 'native' | 'reference'): Promise<EditSolver> {
  if (prefer === 'reference') return referenceSolver;
  if (cached) return cached;
  try {
    const nativePath = '../native.js';
    const native = (await import(nativePath)) as Record<string, unknown>;
    cached = wrapNative(native) ?? referenceSolver;
  } catch {
    cached = referenceSolver;
  }
  return cached;
}

/** Adapts lib/native.js's solveEdits (d, edits, {lowRank}) → SolvedEdit[] to EditSolver. */
function wrapNative(native: Record<string, unknown>): EditSolver | undefined {
  const solveEdits = native['solveEdits'];
  if (typeof solveEdits !== 'function') return undefined;
  let backend = 'native';
  try {
    const choice = (native['solverBackend'] as () => { name: string })();
    backend = choice.name;
  } catch {
    // solverBackend may throw when the addon is missing: then solveEdits cannot work either.
    return undefined;
  }
  const fn = solveEdits as (d: number, edits: unknown[], opts: unknown) => Promise<{ lowRank?: { D: Float32Array; G: Float32Array } }[]>;
  return {
    name: backend,
    async solve(d, items) {
      items.forEach((it, i) => checkItem(d, it, i));
      const result = await fn(d, items.map((it) => ({ source: it.source, destination: it.destination, rows: it.rows, lambda: it.lambda })), { lowRank: true });
      return result.map((r, i) => {
        if (!r.lowRank) throw new EditError(`native solver returned no low-rank form for edit ${i}`);
        return { D: r.lowRank.D, G: r.lowRank.G };
      });
    },
  };
}

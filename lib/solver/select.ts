// The TIME solve behind one interface: the native addon when it is built (native.ts), else a float64
// TypeScript reference (Cholesky of S = λI + CCᵀ, G = S⁻¹C), correct but slower, used by tests and as fallback.
import { trySolverBackend } from './backend.js';
import { solveEdits } from './native.js';
import { referenceG } from './reference.js';
import { EditError } from '../errors.js';

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
  if (it.source.length !== it.rows * d || it.destination.length !== it.rows * d)
    throw new EditError(`edit ${i}: C and C* must be ${it.rows} × ${d}`);
}

/** Float64 reference solver in TypeScript: S = λI + CCᵀ (n × n), Cholesky, G = S⁻¹C, D = C* − C. */
export const referenceSolver: EditSolver = {
  name: 'typescript-float64',
  async solve(d, items) {
    return items.map((it, idx) => {
      checkItem(d, it, idx);
      let G: Float64Array;
      try {
        G = referenceG(it.source, it.rows, d, it.lambda);
      } catch (err) {
        throw new EditError(`edit ${idx}: ${(err as Error).message}`);
      }
      const D = new Float32Array(it.rows * d);
      for (let i = 0; i < D.length; i++) D[i] = it.destination[i]! - it.source[i]!;
      return { D, G: Float32Array.from(G) };
    });
  },
};

let cached: EditSolver | undefined;

/** The native solver when the addon loads, else the reference; `prefer: 'reference'` forces the latter. */
export async function defaultSolver(prefer?: 'native' | 'reference'): Promise<EditSolver> {
  if (prefer === 'reference') return referenceSolver;
  if (cached) return cached;
  const backend = trySolverBackend(); // undefined without a usable addon (not built, not loadable, bad TIME_EDIT_BACKEND)
  if (backend === undefined) return (cached = referenceSolver);
  return (cached = {
    name: backend.name,
    async solve(d, items) {
      items.forEach((it, i) => checkItem(d, it, i));
      const result = await solveEdits(
        d,
        items.map((it) => ({ source: it.source, destination: it.destination, rows: it.rows, lambda: it.lambda })),
        { lowRank: true },
      );
      return result.map((r, i) => {
        if (!r.lowRank) throw new EditError(`native solver returned no low-rank form for edit ${i}`);
        return { D: r.lowRank.D, G: r.lowRank.G };
      });
    },
  });
}

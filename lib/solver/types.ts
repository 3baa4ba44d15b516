// The data the solver API takes and returns, in one place so that the binding (addon.ts), the argument checks
// (checks.ts), the backend choice (backend.ts) and the math API (native.ts) share them without importing each other.
//
// Shapes (all row-major Float32Array): C and C* are n × d (n aligned token rows, d the text width), the stacked
// projection weights W are R × d (one row per output unit, PyTorch layout), M is d × d, and the low-rank form of an
// edit is the pair D = C* − C and G = S⁻¹C (both n × d) with M = I + DᵀG, W' = W·M, E' = E·Mᵀ.

export type BackendKind = 'cpu' | 'cpu-portable' | 'cuda';

export interface BackendChoice {
  /** What to pass as `backend` (or TIME_EDIT_BACKEND). */
  kind: BackendKind;
  /** Human-readable name, e.g. "cpu-openblas", "cpu-portable (no BLAS: slower)", "cuda". */
  name: string;
}

/** One edit: n aligned rows of source (C) and destination (C*) embeddings, each n × d. */
export interface EditInput {
  source: Float32Array;
  destination: Float32Array;
  /** n; optional (derived from source.length / d), checked when given. */
  rows?: number;
  /** λ > 0, default 0.1 (the paper's value). */
  lambda?: number;
}

/** Stacked projection weights of all edited layers: rows × d. */
export interface StackedWeights {
  data: Float32Array;
  rows: number;
}

/** M = I + Dᵀ·G with D and G both rows × d. */
export interface LowRankForm {
  D: Float32Array;
  G: Float32Array;
  rows: number;
}

/** Anything that describes M for width d: a solved edit, a composition, or a dense M loaded from a file. */
export interface EditTransform {
  d: number;
  lowRank?: LowRankForm;
  dense?: Float32Array;
}

export interface SolvedEdit extends EditTransform {
  /** λ of each edit this transform is made of (one entry, or several after composeTransforms). */
  lambdas: number[];
  /** W' = W·M when weights were given to solveEdits. */
  patched?: Float32Array;
  /** Name of the backend that computed it. */
  backend: string;
}

export interface SolveOptions {
  /** Return the low-rank form (D, G). Default true. */
  lowRank?: boolean;
  /** Return the dense d × d M. Default false. */
  dense?: boolean;
  /** Also patch these weights for every edit: one pass over W per edit. */
  weights?: StackedWeights;
  /**
   * Preallocated outputs, one entry per edit (any subset of D, G: rows × d; dense: d × d; patched: weights' size).
   * Reusing buffers across calls saves allocating and first-touching fresh memory, which on some VMs costs as
   * much as the solve itself. Missing entries are allocated.
   */
  out?: SolveOutputs[];
  /** Backend to use; default solverBackend().kind. */
  backend?: BackendKind;
}

/** Caller-provided output buffers of one edit for solveEdits (see SolveOptions.out). */
export interface SolveOutputs {
  D?: Float32Array;
  G?: Float32Array;
  dense?: Float32Array;
  patched?: Float32Array;
}

export interface OutputOptions {
  /** Write the result here (must have the right length and not overlap the inputs) instead of a new array. */
  out?: Float32Array;
  /** Backend for patchWeights (cuda is used only with a dense M); default solverBackend().kind. */
  backend?: BackendKind;
}

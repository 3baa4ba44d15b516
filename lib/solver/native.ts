// The native TIME solver (C++ addon) behind a typed API: solve edits, patch stacked weights, apply an edit to text
// embeddings, compose edits, and pick the backend. Inputs are checked here (TypeError / RangeError naming the
// argument) and again in the addon; every heavy call runs off the event loop and returns a Promise.
//
// Shapes (all row-major Float32Array): C and C* are n × d (n aligned token rows, d the text width), the stacked
// projection weights W are R × d (one row per output unit, PyTorch layout), M is d × d, and the low-rank form of an
// edit is the pair D = C* − C and G = S⁻¹C (both n × d) with M = I + DᵀG, W' = W·M, E' = E·Mᵀ.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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
  /** λ of each edit this transform is made of (one entry, or several after composeEdits). */
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

interface AddonBackendInfo {
  cpu: string;
  cpuPortable: string;
  hasBlas: boolean;
  cudaBuilt: boolean;
  cudaDevices: number;
}

type MaybeF32 = Float32Array | null;

interface Addon {
  backendInfo(): AddonBackendInfo;
  solve(backend: BackendKind, d: number, sources: Float32Array[], destinations: Float32Array[], lambdas: number[],
    outD: MaybeF32[], outG: MaybeF32[], outM: MaybeF32[], weights: MaybeF32, patched: Float32Array[]): Promise<string>;
  patchDense(backend: BackendKind, d: number, dense: Float32Array[], weights: Float32Array, patched: Float32Array[]): Promise<string>;
  applyLowRank(backend: BackendKind, d: number, rows: Float32Array, A: Float32Array, B: Float32Array, out: Float32Array): Promise<void>;
  applyDense(backend: BackendKind, d: number, rows: Float32Array, M: Float32Array, transpose: boolean, out: Float32Array): Promise<void>;
  sgemm(backend: BackendKind, m: number, n: number, k: number, A: Float32Array, B: Float32Array, C: Float32Array): Promise<void>;
  baseline(backend: BackendKind, d: number, source: Float32Array, destination: Float32Array, lambda: number,
    weights: Float32Array, layerRows: number[], out: Float32Array): Promise<void>;
  getThreads(backend: BackendKind): number;
  setThreads(backend: BackendKind, threads: number): void;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
let loaded: Addon | undefined;

/** Where the addon is loaded from: $TIME_EDIT_ADDON if set, else build/Release/time_edit.node. */
export function addonPath(): string {
  const fromEnv = process.env.TIME_EDIT_ADDON;
  return fromEnv !== undefined && fromEnv !== '' ? resolve(fromEnv) : join(packageRoot, 'build', 'Release', 'time_edit.node');
}

function addon(): Addon {
  if (loaded === undefined) {
    const path = addonPath();
    if (!existsSync(path)) {
      throw new Error(`time-edit: native addon not found at ${path}; build it with \`npm install\` (or \`node scripts/build.js\`)`);
    }
    loaded = createRequire(import.meta.url)(path) as Addon;
  }
  return loaded;
}

// ---- backend choice ----

/** Every backend this build and machine can run: the CPU one(s), and CUDA when built and a device is present. */
export function availableBackends(): BackendChoice[] {
  const info = addon().backendInfo();
  const list: BackendChoice[] = [{ kind: 'cpu', name: info.cpu }];
  if (info.hasBlas) list.push({ kind: 'cpu-portable', name: info.cpuPortable });
  if (info.cudaBuilt && info.cudaDevices > 0) list.push({ kind: 'cuda', name: 'cuda' });
  return list;
}

/** The backend in use: $TIME_EDIT_BACKEND (cpu | cpu-portable | cuda) if set, else cuda when available, else cpu. */
export function solverBackend(): BackendChoice {
  const info = addon().backendInfo();
  const wanted = process.env.TIME_EDIT_BACKEND;
  if (wanted === undefined || wanted === '') {
    return info.cudaBuilt && info.cudaDevices > 0 ? { kind: 'cuda', name: 'cuda' } : { kind: 'cpu', name: info.cpu };
  }
  return checkBackend(wanted, info, 'TIME_EDIT_BACKEND');
}

function checkBackend(wanted: string, info: AddonBackendInfo, source: string): BackendChoice {
  switch (wanted) {
    case 'cpu':
      return { kind: 'cpu', name: info.cpu };
    case 'cpu-portable':
      return { kind: 'cpu-portable', name: info.cpuPortable };
    case 'cuda':
      if (!info.cudaBuilt) {
        throw new Error(`${source}=cuda, but this build of time-edit has no CUDA backend (rebuild with the CUDA toolkit installed); use cpu`);
      }
      if (info.cudaDevices === 0) throw new Error(`${source}=cuda, but no CUDA device is visible on this machine; use cpu`);
      return { kind: 'cuda', name: 'cuda' };
    default:
      throw new RangeError(`${source} must be one of cpu, cpu-portable, cuda; got '${wanted}'`);
  }
}

/** Checks that a backend asked for by name (flag, config) is usable here; `source` names it in the error. */
export function backendFor(kind: string, source = 'backend'): BackendChoice {
  return checkBackend(kind, addon().backendInfo(), source);
}

function resolveBackend(backend: BackendKind | undefined, argName: string): BackendChoice {
  if (backend === undefined) return solverBackend();
  if (typeof backend !== 'string') throw new TypeError(`${argName} must be 'cpu', 'cpu-portable' or 'cuda'`);
  return checkBackend(backend, addon().backendInfo(), argName);
}

/** BLAS threads of the CPU backend (OpenBLAS: openblas_get_num_threads; OPENBLAS_NUM_THREADS sets the default). */
export function solverThreads(backend: 'cpu' | 'cpu-portable' = 'cpu'): number {
  return addon().getThreads(backend);
}

/** Sets the CPU backend's BLAS threads (waits for running native work to finish first). */
export function setSolverThreads(threads: number, backend: 'cpu' | 'cpu-portable' = 'cpu'): void {
  checkInteger(threads, 'threads', 1);
  addon().setThreads(backend, threads);
}

// ---- argument checks (the addon checks again; these name the caller's arguments) ----

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return typeof v === 'object' ? 'an object' : `${typeof v}`;
}

function checkInteger(v: unknown, name: string, min: number): asserts v is number {
  if (typeof v !== 'number') throw new TypeError(`${name} must be an integer, got ${describe(v)}`);
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer ≥ ${min}, got ${v}`);
}

function checkF32(v: unknown, name: string): asserts v is Float32Array {
  if (!(v instanceof Float32Array)) throw new TypeError(`${name} must be a Float32Array, got ${describe(v)}`);
}

function checkRows(v: unknown, name: string, d: number): number {
  checkF32(v, name);
  if (v.length === 0) throw new RangeError(`${name} is empty: need at least one row of d = ${d} values`);
  if (v.length % d !== 0) throw new RangeError(`${name} has ${v.length} values, not a multiple of d = ${d}`);
  return v.length / d;
}

function checkOut(out: unknown, name: string, length: number): Float32Array {
  if (out === undefined) return new Float32Array(length);
  checkF32(out, name);
  if (out.length !== length) throw new RangeError(`${name} must have ${length} values, got ${out.length}`);
  return out;
}

function checkTransform(edit: unknown, name: string): { d: number; lowRank?: LowRankForm; dense?: Float32Array } {
  if (typeof edit !== 'object' || edit === null) throw new TypeError(`${name} must be a solved edit, got ${describe(edit)}`);
  const e = edit as Partial<EditTransform>;
  checkInteger(e.d, `${name}.d`, 1);
  const d = e.d;
  if (e.dense !== undefined) {
    checkF32(e.dense, `${name}.dense`);
    if (e.dense.length !== d * d) throw new RangeError(`${name}.dense must have d × d = ${d * d} values, got ${e.dense.length}`);
  }
  if (e.lowRank !== undefined) {
    const lr = e.lowRank;
    if (typeof lr !== 'object' || lr === null) throw new TypeError(`${name}.lowRank must be {D, G, rows}`);
    checkInteger(lr.rows, `${name}.lowRank.rows`, 1);
    for (const key of ['D', 'G'] as const) {
      checkF32(lr[key], `${name}.lowRank.${key}`);
      if (lr[key].length !== lr.rows * d) {
        throw new RangeError(`${name}.lowRank.${key} must have rows × d = ${lr.rows * d} values, got ${lr[key].length}`);
      }
    }
  }
  if (e.dense === undefined && e.lowRank === undefined) {
    throw new RangeError(`${name} has neither a low-rank form nor a dense M (solve it with lowRank or dense)`);
  }
  return { d, lowRank: e.lowRank, dense: e.dense };
}

// ---- the API ----

/**
 * Solves a batch of independent TIME edits of width d. Returns, per edit, what was asked for: the low-rank form
 * (default), the dense M (`dense: true`) and/or the patched weights W' = W·M (`weights`).
 */
export async function solveEdits(d: number, edits: EditInput[], opts: SolveOptions = {}): Promise<SolvedEdit[]> {
  checkInteger(d, 'd', 1);
  if (!Array.isArray(edits)) throw new TypeError(`edits must be an array, got ${describe(edits)}`);
  if (edits.length === 0) throw new RangeError('edits is empty: give at least one edit');
  if (typeof opts !== 'object' || opts === null) throw new TypeError(`opts must be an object, got ${describe(opts)}`);
  const wantLowRank = opts.lowRank ?? true;
  const wantDense = opts.dense ?? false;
  if (typeof wantLowRank !== 'boolean') throw new TypeError('opts.lowRank must be a boolean');
  if (typeof wantDense !== 'boolean') throw new TypeError('opts.dense must be a boolean');
  if (!wantLowRank && !wantDense && opts.weights === undefined) {
    throw new RangeError('nothing to compute: ask for opts.lowRank, opts.dense or give opts.weights');
  }
  const backend = resolveBackend(opts.backend, 'opts.backend');

  const sources: Float32Array[] = [];
  const destinations: Float32Array[] = [];
  const lambdas: number[] = [];
  const rowsOf: number[] = [];
  edits.forEach((edit, i) => {
    const at = `edits[${i}]`;
    if (typeof edit !== 'object' || edit === null) throw new TypeError(`${at} must be {source, destination}, got ${describe(edit)}`);
    const n = checkRows(edit.source, `${at}.source`, d);
    checkF32(edit.destination, `${at}.destination`);
    if (edit.destination.length !== edit.source.length) {
      throw new RangeError(`${at}.destination has ${edit.destination.length} values but ${at}.source has ${edit.source.length}: C and C* must have the same shape`);
    }
    if (edit.rows !== undefined) {
      checkInteger(edit.rows, `${at}.rows`, 1);
      if (edit.rows !== n) throw new RangeError(`${at}.rows is ${edit.rows} but ${at}.source holds ${n} rows of d = ${d}`);
    }
    const lambda = edit.lambda ?? 0.1;
    if (typeof lambda !== 'number') throw new TypeError(`${at}.lambda must be a number, got ${describe(lambda)}`);
    if (!Number.isFinite(lambda) || lambda <= 0) throw new RangeError(`${at}.lambda must be finite and > 0, got ${lambda}`);
    sources.push(edit.source);
    destinations.push(edit.destination);
    lambdas.push(lambda);
    rowsOf.push(n);
  });

  if (opts.out !== undefined && (!Array.isArray(opts.out) || opts.out.length !== edits.length)) {
    throw new RangeError(`opts.out must be an array of ${edits.length} output objects (one per edit)`);
  }
  const outs: SolveOutputs[] = opts.out ?? edits.map(() => ({}));
  outs.forEach((o, i) => {
    if (typeof o !== 'object' || o === null) throw new TypeError(`opts.out[${i}] must be an object {D?, G?, dense?, patched?}`);
  });
  let weights: Float32Array | null = null;
  const patched: Float32Array[] = [];
  if (opts.weights !== undefined) {
    const w = opts.weights;
    if (typeof w !== 'object' || w === null) throw new TypeError(`opts.weights must be {data, rows}, got ${describe(w)}`);
    checkF32(w.data, 'opts.weights.data');
    checkInteger(w.rows, 'opts.weights.rows', 1);
    if (w.data.length !== w.rows * d) {
      throw new RangeError(`opts.weights.data has ${w.data.length} values but rows × d = ${w.rows} × ${d} = ${w.rows * d}`);
    }
    weights = w.data;
    for (let i = 0; i < edits.length; i++) patched.push(checkOut(outs[i]!.patched, `opts.out[${i}].patched`, w.data.length));
  }

  const outD = rowsOf.map((n, i) => (wantLowRank ? checkOut(outs[i]!.D, `opts.out[${i}].D`, n * d) : null));
  const outG = rowsOf.map((n, i) => (wantLowRank ? checkOut(outs[i]!.G, `opts.out[${i}].G`, n * d) : null));
  const outM = rowsOf.map((_, i) => (wantDense ? checkOut(outs[i]!.dense, `opts.out[${i}].dense`, d * d) : null));
  const name = await addon().solve(backend.kind, d, sources, destinations, lambdas, outD, outG, outM, weights, patched);
  return rowsOf.map((n, i) => {
    const result: SolvedEdit = { d, lambdas: [lambdas[i]!], backend: name };
    const D = outD[i], G = outG[i], M = outM[i];
    if (D && G) result.lowRank = { D, G, rows: n };
    if (M) result.dense = M;
    if (weights !== null) result.patched = patched[i]!;
    return result;
  });
}

/**
 * W' = W·M for stacked weights W (rows × d): the low-rank product W + (W·Dᵀ)·G when cheaper, else one GEMM with the
 * dense M (on CUDA when that backend is chosen and M is dense).
 */
export async function patchWeights(weights: StackedWeights, edit: EditTransform, opts: OutputOptions = {}): Promise<Float32Array> {
  const e = checkTransform(edit, 'edit');
  const d = e.d;
  if (typeof weights !== 'object' || weights === null) throw new TypeError(`weights must be {data, rows}, got ${describe(weights)}`);
  checkF32(weights.data, 'weights.data');
  checkInteger(weights.rows, 'weights.rows', 1);
  if (weights.data.length !== weights.rows * d) {
    throw new RangeError(`weights.data has ${weights.data.length} values but rows × d = ${weights.rows} × ${d} = ${weights.rows * d}`);
  }
  const backend = resolveBackend(opts.backend, 'opts.backend');
  const out = checkOut(opts.out, 'opts.out', weights.data.length);
  if (backend.kind !== 'cuda' && preferLowRank(weights.rows, e) && e.lowRank) {
    await addon().applyLowRank(cpuKind(backend), d, weights.data, e.lowRank.D, e.lowRank.G, out);
  } else {
    const M = e.dense ?? (await denseOf(e, cpuKind(backend)));
    await addon().patchDense(backend.kind, d, [M], weights.data, [out]);
  }
  return out;
}

/**
 * E' = E·Mᵀ for text embeddings E of shape [..., d] (e.g. 2 × 77 × 768 with classifier-free guidance): feeding E' to
 * the unedited UNet equals the edited UNet on E (for K+V edits). Uses the low-rank form when cheaper.
 */
export async function applyToEmbeddings(embeddings: Float32Array, edit: EditTransform, opts: OutputOptions = {}): Promise<Float32Array> {
  const e = checkTransform(edit, 'edit');
  const d = e.d;
  checkRows(embeddings, 'embeddings', d);
  const backend = resolveBackend(opts.backend, 'opts.backend');
  const out = checkOut(opts.out, 'opts.out', embeddings.length);
  if (preferLowRank(embeddings.length / d, e) && e.lowRank) {
    // E·Mᵀ = E + (E·Gᵀ)·D
    await addon().applyLowRank(cpuKind(backend), d, embeddings, e.lowRank.G, e.lowRank.D, out);
  } else {
    await addon().applyDense(cpuKind(backend), d, embeddings, e.dense!, true, out);
  }
  return out;
}

/**
 * The edit "a, then b": W'' = W·M_a·M_b. Low-rank when both are: D = [D_a; D_b], G = [G_a·M_b; G_b]
 * (since M_a·M_b = I + D_aᵀ·G_a·M_b + D_bᵀ·G_b); dense M_a·M_b otherwise (and also when both carry a dense M).
 */
export async function composeEdits(a: EditTransform, b: EditTransform): Promise<SolvedEdit> {
  const ea = checkTransform(a, 'a');
  const eb = checkTransform(b, 'b');
  if (ea.d !== eb.d) throw new RangeError(`a.d (${ea.d}) and b.d (${eb.d}) differ: edits of different text widths cannot be composed`);
  const d = ea.d;
  const kind = cpuKind(solverBackend());
  const lambdas = [...lambdasOf(a), ...lambdasOf(b)];
  const result: SolvedEdit = { d, lambdas, backend: addon().backendInfo()[kind === 'cpu' ? 'cpu' : 'cpuPortable'] };
  if (ea.lowRank && eb.lowRank) {
    const na = ea.lowRank.rows, nb = eb.lowRank.rows;
    const D = new Float32Array((na + nb) * d);
    D.set(ea.lowRank.D, 0);
    D.set(eb.lowRank.D, na * d);
    const G = new Float32Array((na + nb) * d);
    // G_a·M_b = G_a + (G_a·D_bᵀ)·G_b, written straight into the top block.
    await addon().applyLowRank(kind, d, ea.lowRank.G, eb.lowRank.D, eb.lowRank.G, G.subarray(0, na * d));
    G.set(eb.lowRank.G, na * d);
    result.lowRank = { D, G, rows: na + nb };
  }
  if (!result.lowRank || (ea.dense && eb.dense)) {
    const Ma = ea.dense ?? (await denseOf(ea, kind));
    const Mb = eb.dense ?? (await denseOf(eb, kind));
    const M = new Float32Array(d * d);
    await addon().applyDense(kind, d, Ma, Mb, false, M);
    result.dense = M;
  }
  return result;
}

/** The dense M of an edit (computed from its low-rank form as I + DᵀG when it has no dense M). */
export async function denseOf(edit: EditTransform, backend: 'cpu' | 'cpu-portable' = 'cpu'): Promise<Float32Array> {
  const e = checkTransform(edit, 'edit');
  if (e.dense) return e.dense;
  const d = e.d;
  const eye = new Float32Array(d * d);
  for (let i = 0; i < d; i++) eye[i * d + i] = 1;
  const M = new Float32Array(d * d);
  await addon().applyLowRank(backend, d, eye, e.lowRank!.D, e.lowRank!.G, M);  // I + (I·Dᵀ)·G
  return M;
}

// Multiply-adds of m rows through the low-rank form (two thin GEMMs) vs through a dense M (one GEMM, plus making M).
function preferLowRank(m: number, e: EditTransform): boolean {
  if (e.lowRank === undefined) return false;
  const d = e.d;
  const lowRank = 2 * m * d * e.lowRank.rows + m * d;
  const dense = m * d * d + (e.dense === undefined ? d * d * e.lowRank.rows : 0);
  return lowRank < dense;
}

function lambdasOf(e: EditTransform): number[] {
  const l = (e as Partial<SolvedEdit>).lambdas;
  return Array.isArray(l) ? l.filter((x): x is number => typeof x === 'number') : [];
}

function cpuKind(b: BackendChoice): 'cpu' | 'cpu-portable' {
  return b.kind === 'cpu-portable' ? 'cpu-portable' : 'cpu';
}

// ---- for `time-edit bench solve` only ----

/** Benchmark helpers: a plain SGEMM (the floor) and the paper's per-layer algorithm ported as is (the baseline). */
export const benchNative = {
  sgemm(backend: 'cpu' | 'cpu-portable', m: number, n: number, k: number, A: Float32Array, B: Float32Array, C: Float32Array): Promise<void> {
    return addon().sgemm(backend, m, n, k, A, B, C);
  },
  baseline(backend: 'cpu' | 'cpu-portable', d: number, edit: Required<Pick<EditInput, 'source' | 'destination' | 'lambda'>>,
    weights: Float32Array, layerRows: number[], out: Float32Array): Promise<void> {
    return addon().baseline(backend, d, edit.source, edit.destination, edit.lambda, weights, layerRows, out);
  },
};

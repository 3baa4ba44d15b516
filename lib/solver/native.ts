// The native TIME solver's math API: solve a batch of edits, patch stacked weights, apply an edit to text
// embeddings, compose two transforms, and expand one to its dense M. Inputs are checked here (checks.ts: TypeError /
// RangeError naming the argument) and again in the addon; every heavy call runs off the event loop and returns a
// Promise. The backend each call runs on is backend.ts's choice unless the caller names one.
//
// Shapes (all row-major Float32Array): C and C* are n × d (n aligned token rows, d the text width), the stacked
// projection weights W are R × d (one row per output unit, PyTorch layout), M is d × d, and the low-rank form of an
// edit is the pair D = C* − C and G = S⁻¹C (both n × d) with M = I + DᵀG, W' = W·M, E' = E·Mᵀ.
import { addon } from './addon.js';
import { cpuBackendArg, cpuBackendName, cpuKind, resolveBackend, solverBackend } from './backend.js';
import {
  checkF32,
  checkFinite,
  checkInteger,
  checkOptions,
  checkOut,
  checkResultFinite,
  checkRows,
  checkTransform,
  describe,
  MAX_EDITS,
} from './checks.js';
import type {
  EditInput,
  EditTransform,
  LowRankForm,
  OutputOptions,
  SolvedEdit,
  SolveOptions,
  SolveOutputs,
  StackedWeights,
} from './types.js';

export type {
  EditInput,
  EditTransform,
  LowRankForm,
  OutputOptions,
  SolvedEdit,
  SolveOptions,
  SolveOutputs,
  StackedWeights,
} from './types.js';

/**
 * Solves a batch of independent TIME edits of width d. Returns, per edit, what was asked for: the low-rank form
 * (default), the dense M (`dense: true`) and/or the patched weights W' = W·M (`weights`).
 *
 * @example
 *   const [edit] = await solveEdits(768, [{ source: C, destination: Cstar, lambda: 0.1 }]);
 *   edit.lowRank;   // { D, G, rows: C.length / 768 }, with M = I + DᵀG
 */
export async function solveEdits(d: number, edits: EditInput[], options?: SolveOptions): Promise<SolvedEdit[]> {
  checkInteger(d, 'd', 1);
  if (!Array.isArray(edits)) throw new TypeError(`edits must be an array, got ${describe(edits)}`);
  if (edits.length === 0) throw new RangeError('edits is empty: give at least one edit');
  if (edits.length > MAX_EDITS) throw new RangeError(`edits has ${edits.length} entries: at most ${MAX_EDITS} edits per call`);
  const opts = checkOptions<SolveOptions>(options);
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
  // An indexed loop, not forEach: a hole of a sparse array must be refused by its index, not skipped.
  for (let i = 0; i < edits.length; i++) {
    const edit = edits[i];
    const at = `edits[${i}]`;
    if (typeof edit !== 'object' || edit === null) throw new TypeError(`${at} must be {source, destination}, got ${describe(edit)}`);
    const n = checkRows(edit.source, `${at}.source`, d);
    checkF32(edit.destination, `${at}.destination`);
    if (edit.destination.length !== edit.source.length) {
      throw new RangeError(
        `${at}.destination has ${edit.destination.length} values but ${at}.source has ${edit.source.length}: C and C* must have the same shape`,
      );
    }
    checkFinite(edit.source, `${at}.source`, d);
    checkFinite(edit.destination, `${at}.destination`, d);
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
  }

  if (opts.out !== undefined && (!Array.isArray(opts.out) || opts.out.length !== edits.length)) {
    throw new RangeError(`opts.out must be an array of ${edits.length} output objects (one per edit)`);
  }
  const outs: SolveOutputs[] = opts.out ?? edits.map(() => ({}));
  for (let i = 0; i < outs.length; i++) {
    const o = outs[i];
    if (typeof o !== 'object' || o === null) throw new TypeError(`opts.out[${i}] must be an object {D?, G?, dense?, patched?}`);
  }
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
    checkFinite(w.data, 'opts.weights.data', d);
    weights = w.data;
    for (let i = 0; i < edits.length; i++) patched.push(checkOut(outs[i]!.patched, `opts.out[${i}].patched`, w.data.length));
  }

  const outD = rowsOf.map((n, i) => (wantLowRank ? checkOut(outs[i]!.D, `opts.out[${i}].D`, n * d) : null));
  const outG = rowsOf.map((n, i) => (wantLowRank ? checkOut(outs[i]!.G, `opts.out[${i}].G`, n * d) : null));
  const outM = rowsOf.map((_, i) => (wantDense ? checkOut(outs[i]!.dense, `opts.out[${i}].dense`, d * d) : null));
  const name = await addon().solve(backend.kind, d, sources, destinations, lambdas, outD, outG, outM, weights, patched);
  for (let i = 0; i < rowsOf.length; i++) {
    for (const [out, what] of [
      [outD[i], 'D'],
      [outG[i], 'G'],
      [outM[i], 'the dense M'],
      [patched[i], 'the patched weights'],
    ] as const) {
      if (out) checkResultFinite(out, `edits[${i}]: ${what}`, d);
    }
  }
  return rowsOf.map((n, i) => {
    const result: SolvedEdit = { d, lambdas: [lambdas[i]!], backend: name };
    const D = outD[i],
      G = outG[i],
      M = outM[i];
    if (D && G) result.lowRank = { D, G, rows: n };
    if (M) result.dense = M;
    if (weights !== null) result.patched = patched[i]!;
    return result;
  });
}

/**
 * W' = W·M for stacked weights W (rows × d): the low-rank product W + (W·Dᵀ)·G when cheaper, else one GEMM with the
 * dense M (on CUDA when that backend is chosen and M is dense).
 *
 * @example
 *   const patched = await patchWeights({ data: W, rows: W.length / 768 }, edit);   // W·M, same layout as W
 */
export async function patchWeights(weights: StackedWeights, edit: EditTransform, options?: OutputOptions): Promise<Float32Array> {
  const opts = checkOptions<OutputOptions>(options);
  const e = checkTransform(edit, 'edit');
  const d = e.d;
  if (typeof weights !== 'object' || weights === null) throw new TypeError(`weights must be {data, rows}, got ${describe(weights)}`);
  checkF32(weights.data, 'weights.data');
  checkInteger(weights.rows, 'weights.rows', 1);
  if (weights.data.length !== weights.rows * d) {
    throw new RangeError(`weights.data has ${weights.data.length} values but rows × d = ${weights.rows} × ${d} = ${weights.rows * d}`);
  }
  checkFinite(weights.data, 'weights.data', d);
  const backend = resolveBackend(opts.backend, 'opts.backend');
  const out = checkOut(opts.out, 'opts.out', weights.data.length);
  if (backend.kind !== 'cuda' && preferLowRank(weights.rows, e) && e.lowRank) {
    await addon().applyLowRank(cpuKind(backend), d, weights.data, e.lowRank.D, e.lowRank.G, out);
  } else {
    const M = e.dense ?? (await denseFromLowRank(d, e.lowRank!, cpuKind(backend)));
    await addon().patchDense(backend.kind, d, [M], weights.data, [out]);
  }
  checkResultFinite(out, 'the patched weights W·M', d);
  return out;
}

/**
 * E' = E·Mᵀ for text embeddings E of shape [..., d] (e.g. 2 × 77 × 768 with classifier-free guidance): feeding E' to
 * the unedited UNet equals the edited UNet on E (for K+V edits). Uses the low-rank form when cheaper, else the dense
 * M (formed as I + DᵀG first when the edit has only the low-rank form; the cost model counts that).
 *
 * @example
 *   const edited = await applyToEmbeddings(E, edit);   // E·Mᵀ, E.length values
 */
export async function applyToEmbeddings(embeddings: Float32Array, edit: EditTransform, options?: OutputOptions): Promise<Float32Array> {
  const opts = checkOptions<OutputOptions>(options);
  const e = checkTransform(edit, 'edit');
  const d = e.d;
  checkRows(embeddings, 'embeddings', d);
  checkFinite(embeddings, 'embeddings', d);
  const backend = resolveBackend(opts.backend, 'opts.backend');
  const out = checkOut(opts.out, 'opts.out', embeddings.length);
  if (preferLowRank(embeddings.length / d, e) && e.lowRank) {
    // E·Mᵀ = E + (E·Gᵀ)·D
    await addon().applyLowRank(cpuKind(backend), d, embeddings, e.lowRank.G, e.lowRank.D, out);
  } else {
    const M = e.dense ?? (await denseFromLowRank(d, e.lowRank!, cpuKind(backend)));
    await addon().applyDense(cpuKind(backend), d, embeddings, M, true, out);
  }
  checkResultFinite(out, 'the edited embeddings E·Mᵀ', d);
  return out;
}

/**
 * The edit "a, then b": W'' = W·M_a·M_b. Low-rank when both are: D = [D_a; D_b], G = [G_a·M_b; G_b]
 * (since M_a·M_b = I + D_aᵀ·G_a·M_b + D_bᵀ·G_b); dense M_a·M_b otherwise (and also when both carry a dense M).
 * This composes the numbers; chaining two saved edits of a model (their steps kept) is the edit layer's chainEdits.
 *
 * @example
 *   const both = await composeTransforms(first, second);   // both.lambdas = [...first.lambdas, ...second.lambdas]
 */
export async function composeTransforms(a: EditTransform, b: EditTransform): Promise<SolvedEdit> {
  const ea = checkTransform(a, 'a');
  const eb = checkTransform(b, 'b');
  if (ea.d !== eb.d) throw new RangeError(`a.d (${ea.d}) and b.d (${eb.d}) differ: edits of different text widths cannot be composed`);
  const d = ea.d;
  const kind = cpuKind(solverBackend());
  const lambdas = [...lambdasOf(a), ...lambdasOf(b)];
  const result: SolvedEdit = { d, lambdas, backend: cpuBackendName(kind) };
  if (ea.lowRank && eb.lowRank) {
    const na = ea.lowRank.rows,
      nb = eb.lowRank.rows;
    const D = new Float32Array((na + nb) * d);
    D.set(ea.lowRank.D, 0);
    D.set(eb.lowRank.D, na * d);
    const G = new Float32Array((na + nb) * d);
    // G_a·M_b = G_a + (G_a·D_bᵀ)·G_b, written straight into the top block.
    await addon().applyLowRank(kind, d, ea.lowRank.G, eb.lowRank.D, eb.lowRank.G, G.subarray(0, na * d));
    checkResultFinite(G.subarray(0, na * d), 'the composed G_a·M_b', d);
    G.set(eb.lowRank.G, na * d);
    result.lowRank = { D, G, rows: na + nb };
  }
  if (!result.lowRank || (ea.dense && eb.dense)) {
    const Ma = ea.dense ?? (await denseFromLowRank(d, ea.lowRank!, kind));
    const Mb = eb.dense ?? (await denseFromLowRank(d, eb.lowRank!, kind));
    const M = new Float32Array(d * d);
    await addon().applyDense(kind, d, Ma, Mb, false, M);
    checkResultFinite(M, 'the composed M_a·M_b', d);
    result.dense = M;
  }
  return result;
}

/**
 * The dense M of an edit: its stored dense M (checked like any input), else I + DᵀG from its low-rank form,
 * computed on the CPU backend `backend`.
 *
 * @example
 *   (await denseOf(edit)).length;   // d × d
 */
export async function denseOf(edit: EditTransform, backend: 'cpu' | 'cpu-portable' = 'cpu'): Promise<Float32Array> {
  const kind = cpuBackendArg(backend, 'backend');
  const e = checkTransform(edit, 'edit');
  if (e.dense) return e.dense;
  return denseFromLowRank(e.d, e.lowRank!, kind);
}

// M = I + DᵀG of a checked low-rank form, as I + (I·Dᵀ)·G through the addon's low-rank product.
async function denseFromLowRank(d: number, lowRank: LowRankForm, kind: 'cpu' | 'cpu-portable'): Promise<Float32Array> {
  const eye = new Float32Array(d * d);
  for (let i = 0; i < d; i++) eye[i * d + i] = 1;
  const M = new Float32Array(d * d);
  await addon().applyLowRank(kind, d, eye, lowRank.D, lowRank.G, M);
  checkResultFinite(M, 'the dense M = I + DᵀG', d);
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

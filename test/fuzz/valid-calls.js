// The fuzz suite's valid calls: for each API function, a builder that draws one well-formed call from the seeded
// random source, with the caller's output buffers it passes (filled with a sentinel) and the float64 copies of its
// inputs that oracle.js recomputes the expected result from. Every case is kept well conditioned so that a
// relative error above oracle.js's tolerance is a bug, not rounding. generate-call.js picks the function;
// mutations.js may then break one argument.
import { matmul, rng } from '../solver-reference.js';

const MAX_D = 48;
const MAX_N = 60;
const SENTINEL = 7.25;

/** The seeded random source of one call: solver-reference.js's mulberry32 plus the draws the builders need. */
export function random(seed) {
  const base = rng(seed);
  const r = {
    uniform: base.uniform,
    normal: base.normal,
    int: (lo, hi) => lo + Math.floor(base.uniform() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(base.uniform() * list.length)],
    chance: (p) => base.uniform() < p,
    logUniform: (lo, hi) => lo * (hi / lo) ** base.uniform(),
    f32: (count, scale) => base.f32(count, scale),
  };
  return r;
}

/** A Float32Array of `count` copies of the sentinel: a caller's output buffer before the call. */
export function sentinelBuffer(count) {
  return new Float32Array(count).fill(SENTINEL);
}

/** M = I + DᵀG in float64 (d × d) from the low-rank pair (n × d each). */
function lowRankToDense(D, G, n, d) {
  const M = matmul(D, G, d, n, d, { transA: true });
  for (let i = 0; i < d; i++) M[i * d + i] += 1;
  return M;
}

/**
 * A synthetic EditTransform of width d: a random low-rank pair scaled so that ‖DᵀG‖ stays below ‖I‖ (M well
 * conditioned), with the low-rank form, the dense M = float32(I + DᵀG), or both.
 */
export function makeTransform(r, d, form = r.pick(['lowRank', 'dense', 'both']), n = r.int(1, MAX_N)) {
  const scale = Math.sqrt(0.05 + 0.65 * r.uniform()) / (n * d) ** 0.25;
  const D = r.f32(n * d, scale);
  const G = r.f32(n * d, scale);
  const edit = { d };
  if (form !== 'dense') edit.lowRank = { D, G, rows: n };
  if (form !== 'lowRank') edit.dense = Float32Array.from(lowRankToDense(D, G, n, d));
  if (r.chance(0.5)) edit.lambdas = [r.logUniform(1e-3, 10)];
  return edit;
}

// ---------------------------------------------------------------------------------------------------------------
// Valid calls. Each builder returns { fn, args, outs, expect, oracle }: `outs` are the caller-provided output
// buffers (filled with the sentinel, so a rejected call can be checked to have written nothing) and `oracle` the
// float64 copies of the inputs that oracle.js recomputes the expected result from.

function pickBackend(r) {
  return r.pick([undefined, undefined, 'cpu', 'cpu-portable']);
}

/** solveEdits(d, edits, opts): 1-3 edits, each C with s² = λ·u/(√n+√d)² so λI + CᵀC has condition number ≲ 300. */
function buildSolve(r) {
  const d = r.int(1, MAX_D);
  const count = r.pick([1, 1, 1, 2, 3]);
  const edits = [];
  const items = [];
  for (let i = 0; i < count; i++) {
    const n = r.int(1, MAX_N);
    const givesLambda = r.chance(0.8);
    const lambda = givesLambda ? r.logUniform(1e-3, 10) : 0.1;
    const s = Math.sqrt(lambda * r.logUniform(0.1, 300)) / (Math.sqrt(n) + Math.sqrt(d));
    const source = r.f32(n * d, s);
    const shift = r.f32(n * d, s * (0.05 + 0.95 * r.uniform()));
    const destination = source.map((v, k) => v + shift[k]);
    const edit = { source, destination };
    if (givesLambda) edit.lambda = lambda;
    if (r.chance(0.3)) edit.rows = n;
    edits.push(edit);
    items.push({ n, lambda, C: Float64Array.from(source), Cs: Float64Array.from(destination) });
  }
  const opts = {};
  const form = r.pick(['default', 'lowRank', 'dense', 'denseOnly', 'both', 'weightsOnly']);
  if (form === 'lowRank') opts.lowRank = true;
  if (form === 'dense' || form === 'both') opts.dense = true;
  if (form === 'denseOnly') Object.assign(opts, { lowRank: false, dense: true });
  if (form === 'both') opts.lowRank = true;
  let weights = null;
  if (form === 'weightsOnly' || r.chance(0.35)) {
    const rows = r.int(1, 64);
    weights = { data: r.f32(rows * d, r.logUniform(0.01, 100)), rows };
    opts.weights = weights;
    if (form === 'weightsOnly') Object.assign(opts, { lowRank: false, dense: false });
  }
  const wantLowRank = opts.lowRank ?? true;
  const wantDense = opts.dense ?? false;
  const backend = pickBackend(r);
  if (backend !== undefined) opts.backend = backend;
  const outs = [];
  if (r.chance(0.3)) {
    opts.out = items.map(({ n }) => {
      const o = {};
      const add = (key, length) => {
        if (r.chance(0.6)) {
          o[key] = sentinelBuffer(length);
          outs.push(o[key]);
        }
      };
      if (wantLowRank) {
        add('D', n * d);
        add('G', n * d);
      }
      if (wantDense) add('dense', d * d);
      if (weights) add('patched', weights.data.length);
      return o;
    });
  }
  const args = Object.keys(opts).length === 0 && r.chance(0.5) ? [d, edits] : [d, edits, opts];
  return {
    fn: 'solveEdits',
    args,
    outs,
    oracle: {
      d,
      items,
      wantLowRank,
      wantDense,
      weights: weights && { rows: weights.rows, W: Float64Array.from(weights.data) },
      out: opts.out,
    },
  };
}

/** Float64 copies of a transform's forms, taken before the call. */
function snapshot(edit) {
  return {
    d: edit.d,
    lowRank: edit.lowRank && {
      rows: edit.lowRank.rows,
      D: Float64Array.from(edit.lowRank.D),
      G: Float64Array.from(edit.lowRank.G),
    },
    dense: edit.dense && Float64Array.from(edit.dense),
    lambdas: edit.lambdas,
  };
}

/** The `opts` argument of patchWeights / applyToEmbeddings: absent, {}, a backend and/or a caller's out buffer. */
function outputOptions(r, length, outs) {
  const opts = {};
  const backend = pickBackend(r);
  if (backend !== undefined) opts.backend = backend;
  if (r.chance(0.35)) {
    opts.out = sentinelBuffer(length);
    outs.push(opts.out);
  }
  if (Object.keys(opts).length === 0 && r.chance(0.6)) return undefined;
  return opts;
}

function buildPatch(r) {
  const d = r.int(1, MAX_D);
  const edit = makeTransform(r, d);
  const rows = r.int(1, 64);
  const weights = { data: r.f32(rows * d, r.logUniform(0.01, 100)), rows };
  const outs = [];
  const opts = outputOptions(r, rows * d, outs);
  const args = opts === undefined ? [weights, edit] : [weights, edit, opts];
  return {
    fn: 'patchWeights',
    args,
    outs,
    oracle: { edit: snapshot(edit), W: Float64Array.from(weights.data), rows, out: opts?.out },
  };
}

function buildApply(r, { edit: given, rows: givenRows } = {}) {
  const d = given?.d ?? r.int(1, MAX_D);
  const edit = given ?? makeTransform(r, d);
  const rows = givenRows ?? (r.chance(0.5) ? r.int(1, 8) : r.int(1, 120));
  const embeddings = r.f32(rows * d, r.logUniform(0.01, 100));
  const outs = [];
  const opts = outputOptions(r, rows * d, outs);
  const args = opts === undefined ? [embeddings, edit] : [embeddings, edit, opts];
  return {
    fn: 'applyToEmbeddings',
    args,
    outs,
    oracle: { edit: snapshot(edit), E: Float64Array.from(embeddings), rows, out: opts?.out },
  };
}

function buildCompose(r) {
  const d = r.int(1, MAX_D);
  const a = makeTransform(r, d);
  const b = makeTransform(r, d);
  return { fn: 'composeTransforms', args: [a, b], outs: [], oracle: { a: snapshot(a), b: snapshot(b) } };
}

function buildDenseOf(r) {
  const d = r.int(1, MAX_D);
  const edit = makeTransform(r, d);
  const backend = r.pick([undefined, 'cpu', 'cpu-portable']);
  return {
    fn: 'denseOf',
    args: backend === undefined ? [edit] : [edit, backend],
    outs: [],
    oracle: { edit: snapshot(edit) },
  };
}

function buildAvailableBackends() {
  return { fn: 'availableBackends', args: [], outs: [], oracle: {} };
}

export const BUILDERS = {
  solveEdits: buildSolve,
  patchWeights: buildPatch,
  applyToEmbeddings: buildApply,
  composeTransforms: buildCompose,
  denseOf: buildDenseOf,
  availableBackends: buildAvailableBackends,
};

/**
 * applyToEmbeddings with a low-rank-only edit whose n > (d − 1)/2, on enough rows that the dense product is the
 * cheaper route: M must be formed from (D, G), so this is a valid call that must succeed.
 */
export function buildLowRankOnlyDenseRoute(r) {
  const d = r.int(3, MAX_D);
  let n = r.int(Math.ceil(d / 2), MAX_N);
  // The dense route wins when m·(2n + 1 − d) ≥ d·n (the cost model of preferLowRank, lib/solver/native.ts).
  let rows = Math.ceil((d * n) / (2 * n + 1 - d)) + r.int(0, 8);
  if (rows > 400) {
    n = MAX_N;
    rows = Math.ceil((d * n) / (2 * n + 1 - d)) + r.int(0, 8);
  }
  const call = buildApply(r, { edit: makeTransform(r, d, 'lowRank', n), rows });
  call.case = 'low-rank-only-dense-route';
  return call;
}

/** The value the caller's output buffers hold before a call (a rejected call must leave them so). */
export const OUTPUT_SENTINEL = SENTINEL;

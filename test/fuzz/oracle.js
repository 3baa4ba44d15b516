// The fuzz suite's float64 oracle: what an accepted call should have returned, recomputed from the float64 copies
// of its inputs that generate-call.js took before the call, with test/solver-reference.js's direct formula
// M = (λI + C*ᵀC)(λI + CᵀC)⁻¹ (Gauss-Jordan; not the push-through / Cholesky route the native code takes). The
// generator keeps every valid case well conditioned, so a relative Frobenius error above TOLERANCE is a bug.
import { matmul, referenceM } from '../solver-reference.js';

/** Relative Frobenius error allowed on float32 results of well-conditioned cases. */
export const TOLERANCE = 1e-4;

/**
 * M of a transform snapshot, float64: I + DᵀG when it has the low-rank form, else its dense M.
 *
 * @example
 *   transformM({ d: 2, dense: Float64Array.of(1, 0, 0, 1) });   // the same Float64Array
 */
export function transformM(t) {
  if (!t.lowRank) return t.dense;
  const { D, G, rows } = t.lowRank;
  const M = matmul(D, G, t.d, rows, t.d, { transA: true });
  for (let i = 0; i < t.d; i++) M[i * t.d + i] += 1;
  return M;
}

function relErr(got, want) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** A failed check: which output, and the relative error when it is one of accuracy. */
class Mismatch extends Error {
  constructor(message, error = Infinity) {
    super(message);
    this.error = error;
  }
}

function isF32(v, length, what) {
  if (!(v instanceof Float32Array)) throw new Mismatch(`${what} is not a Float32Array (${v?.constructor?.name ?? v})`);
  if (v.length !== length) throw new Mismatch(`${what} has ${v.length} values, want ${length}`);
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) throw new Mismatch(`${what}[${i}] is ${v[i]} (non-finite output from finite input)`);
  }
}

function close(got, want, what, worst) {
  isF32(got, want.length, what);
  const e = relErr(got, want);
  worst.error = Math.max(worst.error, e);
  if (!(e <= TOLERANCE)) throw new Mismatch(`${what}: relative error ${e.toExponential(2)} > ${TOLERANCE}`, e);
}

function sameBuffer(got, given, what) {
  if (given !== undefined && got !== given) throw new Mismatch(`${what} is not the caller's opts.out buffer`);
}

function checkSolve(o, result, worst) {
  const { d, items } = o;
  if (!Array.isArray(result) || result.length !== items.length)
    throw new Mismatch(`returned ${result?.length} results for ${items.length} edits`);
  items.forEach((item, i) => {
    const got = result[i];
    const M = referenceM(item.C, item.Cs, item.n, d, item.lambda);
    if (got.d !== d) throw new Mismatch(`[${i}].d is ${got.d}, want ${d}`);
    if (!Array.isArray(got.lambdas) || got.lambdas.length !== 1 || got.lambdas[0] !== item.lambda) {
      throw new Mismatch(`[${i}].lambdas is ${JSON.stringify(got.lambdas)}, want [${item.lambda}]`);
    }
    if (o.wantLowRank !== (got.lowRank !== undefined)) throw new Mismatch(`[${i}].lowRank ${got.lowRank ? 'present' : 'missing'}`);
    if (o.wantDense !== (got.dense !== undefined)) throw new Mismatch(`[${i}].dense ${got.dense ? 'present' : 'missing'}`);
    if ((o.weights !== null) !== (got.patched !== undefined)) throw new Mismatch(`[${i}].patched ${got.patched ? 'present' : 'missing'}`);
    const out = o.out?.[i] ?? {};
    if (got.lowRank) {
      const { D, G, rows } = got.lowRank;
      if (rows !== item.n) throw new Mismatch(`[${i}].lowRank.rows is ${rows}, want ${item.n}`);
      close(
        D,
        item.Cs.map((v, k) => v - item.C[k]),
        `[${i}].lowRank.D`,
        worst,
      );
      isF32(G, item.n * d, `[${i}].lowRank.G`);
      sameBuffer(D, out.D, `[${i}].lowRank.D`);
      sameBuffer(G, out.G, `[${i}].lowRank.G`);
      close(Float32Array.from(transformM({ d, lowRank: { D, G, rows } })), M, `[${i}] I + DᵀG`, worst);
    }
    if (got.dense) {
      close(got.dense, M, `[${i}].dense`, worst);
      sameBuffer(got.dense, out.dense, `[${i}].dense`);
    }
    if (got.patched) {
      close(got.patched, matmul(o.weights.W, M, o.weights.rows, d, d), `[${i}].patched`, worst);
      sameBuffer(got.patched, out.patched, `[${i}].patched`);
    }
  });
}

function checkPatch(o, result, worst) {
  const d = o.edit.d;
  close(result, matmul(o.W, transformM(o.edit), o.rows, d, d), 'W·M', worst);
  sameBuffer(result, o.out, 'result');
}

function checkApply(o, result, worst) {
  const d = o.edit.d;
  close(result, matmul(o.E, transformM(o.edit), o.rows, d, d, { transB: true }), 'E·Mᵀ', worst);
  sameBuffer(result, o.out, 'result');
}

function checkCompose(o, result, worst) {
  const { a, b } = o;
  const d = a.d;
  const want = matmul(transformM(a), transformM(b), d, d, d);
  const bothLowRank = Boolean(a.lowRank && b.lowRank);
  if (result?.d !== d) throw new Mismatch(`.d is ${result?.d}, want ${d}`);
  if (bothLowRank !== (result.lowRank !== undefined)) throw new Mismatch(`.lowRank ${result.lowRank ? 'present' : 'missing'}`);
  const wantDense = !bothLowRank || Boolean(a.dense && b.dense);
  if (wantDense !== (result.dense !== undefined)) throw new Mismatch(`.dense ${result.dense ? 'present' : 'missing'}`);
  if (result.lowRank) {
    const rows = a.lowRank.rows + b.lowRank.rows;
    if (result.lowRank.rows !== rows) throw new Mismatch(`.lowRank.rows is ${result.lowRank.rows}, want ${rows}`);
    isF32(result.lowRank.D, rows * d, '.lowRank.D');
    isF32(result.lowRank.G, rows * d, '.lowRank.G');
    close(Float32Array.from(transformM({ d, lowRank: result.lowRank })), want, 'I + DᵀG of M_a·M_b', worst);
  }
  if (result.dense) close(result.dense, want, '.dense M_a·M_b', worst);
  const lambdas = [...(a.lambdas ?? []), ...(b.lambdas ?? [])];
  if (JSON.stringify(result.lambdas) !== JSON.stringify(lambdas)) {
    throw new Mismatch(`.lambdas is ${JSON.stringify(result.lambdas)}, want ${JSON.stringify(lambdas)}`);
  }
}

function checkDenseOf(o, result, worst) {
  close(result, transformM(o.edit), 'M', worst);
}

function checkBackends(_o, result) {
  if (!Array.isArray(result) || result.length === 0) throw new Mismatch('availableBackends() is not a non-empty array');
  if (result[0].kind !== 'cpu') throw new Mismatch(`the first backend is ${result[0].kind}, want cpu`);
  for (const b of result) {
    if (!['cpu', 'cpu-portable', 'cuda'].includes(b.kind) || typeof b.name !== 'string' || b.name === '') {
      throw new Mismatch(`bad backend entry ${JSON.stringify(b)}`);
    }
  }
}

const CHECKS = {
  solveEdits: checkSolve,
  patchWeights: checkPatch,
  applyToEmbeddings: checkApply,
  composeTransforms: checkCompose,
  denseOf: checkDenseOf,
  availableBackends: checkBackends,
};

/**
 * Checks an accepted call's result against the float64 oracle: { ok: true, error } with the worst relative error
 * seen, or { ok: false, detail, error }.
 *
 * @example
 *   checkResult(call, await patchWeights(...call.args));   // { ok: true, error: 3.1e-7 }
 */
export function checkResult(call, result) {
  const worst = { error: 0 };
  try {
    CHECKS[call.fn](call.oracle, result, worst);
    return { ok: true, error: worst.error };
  } catch (err) {
    if (!(err instanceof Mismatch)) throw err;
    return { ok: false, detail: err.message, error: err.error };
  }
}

/**
 * Every number in a result (arrays, typed arrays, nested objects) is finite: for 'finite-or-reject' calls.
 *
 * @example
 *   allFinite({ dense: Float32Array.of(1, Infinity) });   // false
 */
export function allFinite(value, depth = 0) {
  if (value instanceof Float32Array) return value.every(Number.isFinite);
  if (typeof value === 'number') return Number.isFinite(value);
  if (depth > 3 || value === null || typeof value !== 'object') return true;
  return Object.values(value).every((v) => allFinite(v, depth + 1));
}

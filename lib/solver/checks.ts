// Argument checks of the solver API. The addon checks its arguments again, but only these can name the caller's
// arguments (`edits[2].source`, `opts.out[0].D`): a TypeError for a value of the wrong type, a RangeError for a
// value of the right type but the wrong size or range, as Node's own APIs do.
//
// Two checks guard the addon rather than the math. A Float32Array over a resizable ArrayBuffer or a growable
// SharedArrayBuffer is refused: the addon's worker thread reads a raw pointer into the buffer after the call
// returns, and shrinking the buffer meanwhile decommits those pages under it. And every value is checked finite
// here, where the message can name the caller's argument (the addon checks only the buffers a route uses).
import type { EditTransform, LowRankForm } from './types.js';

/** The most edits one solveEdits call takes: checked before the array is walked (`new Array(2 ** 32 - 1)` has 4·10⁹ holes). */
export const MAX_EDITS = 1_000_000;

/** How a value reads in an error message: "null", "an array", "a Float64Array", "an object", "string", … */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return typeof v === 'object' ? 'an object' : `${typeof v}`;
}

/** An integer ≥ min (TypeError when not a number, RangeError otherwise). */
export function checkInteger(v: unknown, name: string, min: number): asserts v is number {
  if (typeof v !== 'number') throw new TypeError(`${name} must be an integer, got ${describe(v)}`);
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer ≥ ${min}, got ${v}`);
}

/** `opts` of an API function: undefined (read as `{}`) or an object; a TypeError otherwise. */
export function checkOptions<T extends object>(opts: unknown, name = 'opts'): T {
  if (opts === undefined) return {} as T;
  if (typeof opts !== 'object' || opts === null) throw new TypeError(`${name} must be an object, got ${describe(opts)}`);
  return opts as T;
}

/** A Float32Array over a buffer of fixed size (not a resizable ArrayBuffer, not a growable SharedArrayBuffer). */
export function checkF32(v: unknown, name: string): asserts v is Float32Array {
  if (!(v instanceof Float32Array)) throw new TypeError(`${name} must be a Float32Array, got ${describe(v)}`);
  // ES2024 properties, absent from this project's ES2022 typings (and from engines without resizable buffers).
  const buffer = v.buffer as ArrayBufferLike & { resizable?: boolean; growable?: boolean };
  if (buffer.resizable === true || buffer.growable === true) {
    const kind = buffer.resizable === true ? 'resizable ArrayBuffer' : 'growable SharedArrayBuffer';
    throw new TypeError(`${name} is backed by a ${kind}; copy it into a fixed-size Float32Array first`);
  }
}

/** Where flat index i of a row-major array of width d is, for messages: "index 5 (row 1, column 1)". */
function position(i: number, d: number): string {
  return `index ${i} (row ${Math.floor(i / d)}, column ${i % d})`;
}

/** The index of the first NaN or ±∞ in v, or −1. */
function firstNonFinite(v: Float32Array): number {
  const n = v.length;
  for (let i = 0; i < n; i++) {
    const x = v[i]!;
    // x − x is 0 for every finite x and NaN for NaN and ±∞: one subtraction, no call.
    if (x - x !== 0) return i;
  }
  return -1;
}

/** Every value finite (RangeError naming the argument, the first bad value and its index otherwise). */
export function checkFinite(v: Float32Array, name: string, d: number): void {
  const i = firstNonFinite(v);
  if (i >= 0) throw new RangeError(`${name} contains a non-finite value (${v[i]}) at ${position(i, d)}`);
}

/**
 * A computed result is finite: from finite inputs a non-finite value means the result overflowed float32
 * (FLT_MAX ≈ 3.4e38). The caller's output buffer has been written by then; the RangeError says which result.
 */
export function checkResultFinite(v: Float32Array, what: string, d: number): void {
  const i = firstNonFinite(v);
  if (i >= 0) throw new RangeError(`${what} overflows float32 (${v[i]} at ${position(i, d)}): the inputs are too large in magnitude`);
}

/** A non-empty Float32Array of whole rows of width d; returns the row count. */
export function checkRows(v: unknown, name: string, d: number): number {
  checkF32(v, name);
  if (v.length === 0) throw new RangeError(`${name} is empty: need at least one row of d = ${d} values`);
  if (v.length % d !== 0) throw new RangeError(`${name} has ${v.length} values, not a multiple of d = ${d}`);
  return v.length / d;
}

/** A caller's output buffer of exactly `length` values, or a new one when none was given. */
export function checkOut(out: unknown, name: string, length: number): Float32Array {
  if (out === undefined) return new Float32Array(length);
  checkF32(out, name);
  if (out.length !== length) throw new RangeError(`${name} must have ${length} values, got ${out.length}`);
  return out;
}

/** An EditTransform with consistent sizes, finite values and at least one of its two forms (low-rank, dense). */
export function checkTransform(edit: unknown, name: string): { d: number; lowRank?: LowRankForm; dense?: Float32Array } {
  if (typeof edit !== 'object' || edit === null) throw new TypeError(`${name} must be a solved edit, got ${describe(edit)}`);
  const e = edit as Partial<EditTransform>;
  checkInteger(e.d, `${name}.d`, 1);
  const d = e.d;
  if (e.dense !== undefined) {
    checkF32(e.dense, `${name}.dense`);
    if (e.dense.length !== d * d) throw new RangeError(`${name}.dense must have d × d = ${d * d} values, got ${e.dense.length}`);
    checkFinite(e.dense, `${name}.dense`, d);
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
    // Both forms are checked even where a call uses only one: a NaN in the other is a broken edit either way.
    for (const key of ['D', 'G'] as const) checkFinite(lr[key], `${name}.lowRank.${key}`, d);
  }
  if (e.dense === undefined && e.lowRank === undefined) {
    throw new RangeError(`${name} has neither a low-rank form nor a dense M (solve it with lowRank or dense)`);
  }
  return { d, lowRank: e.lowRank, dense: e.dense };
}

// Hooks into the addon for `time-edit bench solve` only (lib/cli/commands/bench/solve.ts): a plain SGEMM, the floor
// any patch of W must pay, and the paper's per-layer algorithm ported as is, the baseline the batched solver is
// measured against. Not part of the package's API: no argument checks beyond the addon's own.
import { addon } from './addon.js';
import type { EditInput } from './types.js';

/**
 * Benchmark helpers: a plain SGEMM (the floor) and the paper's per-layer algorithm ported as is (the baseline).
 *
 * @example
 *   await benchNative.sgemm('cpu', R, d, d, W, M, out);   // out = W·M, R × d
 */
export const benchNative = {
  sgemm(
    backend: 'cpu' | 'cpu-portable',
    m: number,
    n: number,
    k: number,
    A: Float32Array,
    B: Float32Array,
    C: Float32Array,
  ): Promise<void> {
    return addon().sgemm(backend, m, n, k, A, B, C);
  },
  baseline(
    backend: 'cpu' | 'cpu-portable',
    d: number,
    edit: Required<Pick<EditInput, 'source' | 'destination' | 'lambda'>>,
    weights: Float32Array,
    layerRows: number[],
    out: Float32Array,
  ): Promise<void> {
    return addon().baseline(backend, d, edit.source, edit.destination, edit.lambda, weights, layerRows, out);
  },
};

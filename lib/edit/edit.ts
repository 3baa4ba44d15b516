// The Edit value: what TIME computed, independent of how it is applied.
//
// One step is one solve: with D = C* − C and G = (λI + CCᵀ)⁻¹C (both n × d, from the native solver),
// M = I + DᵀG, every edited projection W (out × d) becomes W·M, and equivalently every text conditioning E
// (rows are token embeddings) becomes E·Mᵀ = E + (E·Gᵀ)·D on the path of the projections it edits.
// Steps compose in order: after steps 1..s a projection is W·M₁·…·M_s, i.e. a conditioning is transformed by
// the last step first. A step edits K and V ('kv', the paper's setting) or only V ('v', the official code
// without --with_to_k) or only K ('k', an ablation of the paper), so the K path and the V path may see different
// transforms. A step may also edit only some cross-attention layers (`layers`, indices into the UNet's layers in
// graph order: down, mid, up blocks), another ablation; a step without `layers` edits all of them.
import { EditError } from '../errors.js';

export type EditMode = 'kv' | 'v' | 'k';

export interface EditPair {
  source: string;
  destination: string;
}

export interface EditStep {
  /** The edit pairs solved jointly in this step (before augmentation). */
  pairs: EditPair[];
  /** Prompts kept unchanged (UCE-style preservation rows), possibly empty. */
  preserve: string[];
  lambda: number;
  augmentations: string[];
  mode: EditMode;
  /** The cross-attention layers the step edits (0-based, ascending); absent: all of them. */
  layers?: number[];
  /** Rows n of D and G. */
  rows: number;
  /** n × d, row-major. */
  D: Float32Array;
  /** n × d, row-major. */
  G: Float32Array;
}

export interface Edit {
  /** Text embedding width. */
  d: number;
  steps: EditStep[];
  /** Fingerprint of the model the edit was computed for (see fingerprint.ts). */
  fingerprint: string;
}

export { EditError };

/**
 * Which projections a step touches: the path (K or V) and, when `layer` is given, that cross-attention layer.
 * Without `layer` the answer is about the path alone (a step with a layer subset still touches its path).
 *
 * @example
 *   stepEdits({ ...step, mode: 'k', layers: [6] }, 'k', 6);   // true
 *   stepEdits({ ...step, mode: 'k', layers: [6] }, 'v', 6);   // false
 */
export function stepEdits(step: EditStep, path: 'k' | 'v', layer?: number): boolean {
  const onPath = step.mode === 'kv' || step.mode === path;
  return onPath && (layer === undefined || step.layers === undefined || step.layers.includes(layer));
}

/** True when the K path needs a different conditioning than the V path (some step is V-only or K-only). */
export function needsSplitConditioning(edit: Edit): boolean {
  return edit.steps.some((s) => s.mode !== 'kv');
}

/**
 * True when different cross-attention layers need different conditionings (some step edits a layer subset): embedding
 * mode then gives each group of projections edited by the same steps its own UNet input (apply.ts routeConditioning).
 *
 * @example
 *   needsLayerRouting({ ...edit, steps: [{ ...edit.steps[0], layers: [0, 1] }] });   // true
 */
export function needsLayerRouting(edit: Edit): boolean {
  return edit.steps.some((s) => s.layers !== undefined);
}

/**
 * Applies the edit to conditionings in float64: rows (count × d, row-major; any number of prompts × 77
 * positions) → rows·Mᵀ for the given path. Pure TypeScript reference; the native applyToEmbeddings does the
 * same on large batches.
 */
export function transformRows(edit: Edit, rows: Float32Array, path: 'k' | 'v'): Float32Array {
  return transformRowsBySteps(edit, rows, (step) => stepEdits(step, path));
}

/**
 * Like transformRows, for the steps `uses` selects (in embedding mode with layer subsets, the steps that edit one
 * group of projections). Example: `transformRowsBySteps(edit, E, (s, i) => i === 0)` applies the first step only.
 */
export function transformRowsBySteps(edit: Edit, rows: Float32Array, uses: (step: EditStep, index: number) => boolean): Float32Array {
  const d = edit.d;
  if (rows.length % d !== 0) throw new EditError(`conditioning of ${rows.length} values is not a multiple of d = ${d}`);
  const cur = Float64Array.from(rows);
  // E·(M₁·…·M_s)ᵀ = E·M_sᵀ·…·M₁ᵀ: the last step first, each E ← E + (E·Gᵀ)·D.
  for (let s = edit.steps.length - 1; s >= 0; s--) {
    const step = edit.steps[s]!;
    if (uses(step, s)) addLowRankInPlace(cur, d, step.G, step.D, step.rows);
  }
  return Float32Array.from(cur);
}

/** rows ← rows + (rows·Aᵀ)·B in float64, for n × d factors A and B: one low-rank step on every d-wide row. */
function addLowRankInPlace(rows: Float64Array, d: number, a: Float32Array, b: Float32Array, n: number): void {
  const count = rows.length / d;
  const proj = new Float64Array(n);
  for (let r = 0; r < count; r++) {
    const off = r * d;
    for (let i = 0; i < n; i++) {
      let acc = 0;
      const ai = i * d;
      for (let k = 0; k < d; k++) acc += rows[off + k]! * a[ai + k]!;
      proj[i] = acc;
    }
    for (let i = 0; i < n; i++) {
      const p = proj[i]!;
      if (p === 0) continue;
      const bi = i * d;
      for (let k = 0; k < d; k++) rows[off + k]! += p * b[bi + k]!;
    }
  }
}

/** Dense M (d × d, row-major) of the whole edit for a path (and, when given, one layer): M₁·M₂·…, in float64. */
export function denseMatrix(edit: Edit, path: 'k' | 'v', layer?: number): Float64Array {
  const d = edit.d;
  const m = new Float64Array(d * d);
  for (let i = 0; i < d; i++) m[i * d + i] = 1;
  // m ← m·(I + DᵀG) = m + (m·Dᵀ)·G, row by row.
  for (const step of edit.steps) if (stepEdits(step, path, layer)) addLowRankInPlace(m, d, step.D, step.G, step.rows);
  return m;
}

/**
 * The edit "`first`, then `second`" (W'' = W·M_first·M_second): the steps of both, in order, for the same model.
 * Nothing is solved or multiplied (each step keeps its own D and G); the native composeTransforms is the one that
 * multiplies two transforms into one.
 *
 * @example
 *   const both = chainEdits(await loadEdit('purple.safetensors'), await loadEdit('square.safetensors'));
 *   both.steps.length;   // the two files' step counts added
 */
export function chainEdits(first: Edit, second: Edit): Edit {
  if (first.fingerprint !== second.fingerprint) throw new EditError('cannot compose edits made for different models (fingerprints differ)');
  if (first.d !== second.d) throw new EditError(`cannot compose edits of width ${first.d} and ${second.d}`);
  return { d: first.d, fingerprint: first.fingerprint, steps: [...first.steps, ...second.steps] };
}

/**
 * Applies the edit to projection weights in PyTorch layout (rows = output units, each a d-vector):
 * W → W·M₁·…·M_s, i.e. per step w ← w + (w·Dᵀ)·G, in float64. `rows` is (count × d), row-major. With `layer`,
 * only the steps that edit that cross-attention layer apply.
 */
export function transformWeightRows(edit: Edit, rows: Float32Array, path: 'k' | 'v', layer?: number): Float32Array {
  const d = edit.d;
  if (rows.length % d !== 0) throw new EditError(`weights of ${rows.length} values are not a multiple of d = ${d}`);
  const cur = Float64Array.from(rows);
  for (const step of edit.steps) if (stepEdits(step, path, layer)) addLowRankInPlace(cur, d, step.D, step.G, step.rows);
  return Float32Array.from(cur);
}

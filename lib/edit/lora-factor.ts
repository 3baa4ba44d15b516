// An edit as a LoRA: every edited projection W (out × d, PyTorch layout) becomes W + up·down with
// up·down = ΔW = W·(M − I). For each path (K, V) M − I = L·R is kept in factored form (L: d × k, R: k × d,
// k the edit's rows over all steps), an orthonormal basis Q (k' × d) of R's rows gives M − I = Z·Q with
// Z = L·(R·Qᵀ) (d × k', k' = the exact rank ≤ min(k, d)), and so ΔW = (W·Z)·Q for every module.
//   - at rank k' (or more) the LoRA is exact: up = W·Z, down = Q;
//   - below it, two truncations: 'per-matrix' keeps the top singular directions of each ΔW (its SVD, through the
//     eigenvectors V of (W·Z)ᵀ(W·Z): up = W·Z·V_r, down = V_rᵀ·Q, the best rank-r approximation of each ΔW,
//     Eckart–Young), and 'shared' those of M − I itself (V from ZᵀZ), so every module has the same lora_down.
// docs/lora.md measures both and explains the default.
import { type Edit, EditError, stepEdits } from './edit.js';
import { gram, matmul, matmulTransB, orthonormalRows, symmetricEigen } from './lora-linalg.js';
import { trySolverBackend } from '../solver/backend.js';
import { patchWeights } from '../solver/native.js';

/** How a LoRA below the exact rank is truncated (see the header comment). */
export type LoraTruncation = 'shared' | 'per-matrix';

/** The truncations, in the order docs and benchmarks list them. */
export const LORA_TRUNCATIONS: readonly LoraTruncation[] = ['per-matrix', 'shared'];

/** The K/V weights of one cross-attention layer, PyTorch layout [width, d] (rows = output units), row-major. */
export interface KvLayerWeights {
  /** The layer's index in the UNet's graph order (what an edit step's `layers` refers to). */
  index: number;
  /** The diffusers module path of the attention, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2`. */
  module: string;
  width: number;
  k: Float32Array;
  v: Float32Array;
}

/** The 16 (for SD 1.x) cross-attention layers' weights of a model, in the project's layer order, and the text width d. */
export interface KvWeights {
  d: number;
  layers: KvLayerWeights[];
}

/** One LoRA module: ΔW ≈ up·down (scale alpha / rank = 1). */
export interface LoraModule {
  /** The attention's diffusers module path (KvLayerWeights.module). */
  module: string;
  path: 'k' | 'v';
  /** out × rank, row-major. */
  up: Float32Array;
  /** rank × d, row-major. */
  down: Float32Array;
  rows: number;
}

/** A LoRA of an edit: one rank for every module. */
export interface LoraFactors {
  d: number;
  rank: number;
  /** The rank at which the LoRA is exact (the largest k' over the paths it edits). */
  exactRank: number;
  truncation: LoraTruncation;
  modules: LoraModule[];
}

/** M − I of one path as L (d × k) · R (k × d), in float64; undefined when no step edits the path. */
export function editDeltaFactors(edit: Edit, path: 'k' | 'v', layer?: number): { L: Float64Array; R: Float64Array; k: number } | undefined {
  const d = edit.d;
  let k = 0;
  let L = new Float64Array(0);
  let R = new Float64Array(0);
  for (const step of edit.steps) {
    if (!stepEdits(step, path, layer)) continue;
    const n = step.rows;
    // (I + L·R)(I + DᵀG) − I = [L | Dᵀ + L·(R·Dᵀ)] · [R; G]
    const rdt = k > 0 ? matmulTransB(R, step.D, k, d, n) : new Float64Array(0); // k × n
    const lrdt = k > 0 ? matmul(L, rdt, d, k, n) : new Float64Array(d * n); // d × n
    const nextL = new Float64Array(d * (k + n));
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < k; j++) nextL[i * (k + n) + j] = L[i * k + j]!;
      for (let j = 0; j < n; j++) nextL[i * (k + n) + k + j] = step.D[j * d + i]! + lrdt[i * n + j]!;
    }
    const nextR = new Float64Array((k + n) * d);
    nextR.set(R);
    for (let i = 0; i < n * d; i++) nextR[k * d + i] = step.G[i]!;
    L = nextL;
    R = nextR;
    k += n;
  }
  return k === 0 ? undefined : { L, R, k };
}

/** M − I = Z·Q with Q (rank × d) orthonormal rows and Z (d × rank). */
export interface DeltaBasis {
  Z: Float64Array;
  Q: Float64Array;
  rank: number;
}

/** The basis form of one path's M − I for one layer (see the header comment); undefined when no step edits it. */
export function editDeltaBasis(edit: Edit, path: 'k' | 'v', layer?: number): DeltaBasis | undefined {
  const f = editDeltaFactors(edit, path, layer);
  if (f === undefined) return undefined;
  const d = edit.d;
  const { basis: Q, rows } = orthonormalRows(f.R, f.k, d);
  const rq = matmulTransB(f.R, Q, f.k, d, rows); // k × rows
  return { Z: matmul(f.L, rq, d, f.k, rows), Q, rank: rows };
}

/** Above this many multiply-adds, W·X runs on the native addon's float32 BLAS when it is built. */
const NATIVE_PRODUCT_THRESHOLD = 2e7;

/** 2⁴⁰: the power of two that lifts W·X far above W in the addon's W + (W·Aᵀ)·B (see weightsTimes). */
const PRODUCT_SCALE = 2 ** 40;

/**
 * W (rows × d, float32) · X (d × c, float64) → rows × c float64. Large products run on the addon's low-rank patch
 * W + (W·Aᵀ)·B with A = Xᵀ and B = 2⁴⁰·[I 0] (c × d), whose first c columns are W + 2⁴⁰·W·X: subtracting W and
 * dividing by 2⁴⁰ (exact) leaves W·X with float32 BLAS accuracy (W's own contribution is below 2⁻⁴⁰ of it);
 * small ones, or all where the addon is not built, run in float64 TypeScript.
 */
async function weightsTimes(w: Float32Array, rows: number, d: number, x: Float64Array, c: number): Promise<Float64Array> {
  if (rows * d * c < NATIVE_PRODUCT_THRESHOLD || c > d || trySolverBackend() === undefined) return matmul(w, x, rows, d, c);
  const A = new Float32Array(c * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < c; j++) A[j * d + i] = x[i * c + j]!;
  const B = new Float32Array(c * d);
  for (let j = 0; j < c; j++) B[j * d + j] = PRODUCT_SCALE;
  const patched = await patchWeights({ data: w, rows }, { d, lowRank: { D: A, G: B, rows: c } });
  const out = new Float64Array(rows * c);
  for (let r = 0; r < rows; r++) for (let j = 0; j < c; j++) out[r * c + j] = (patched[r * d + j]! - w[r * d + j]!) / PRODUCT_SCALE;
  return out;
}

/** The first r columns of a (rows × n) matrix, row-major. */
function leadingColumns(a: Float64Array, rows: number, n: number, r: number): Float64Array {
  const out = new Float64Array(rows * r);
  for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) out[i * r + j] = a[i * n + j]!;
  return out;
}

/** Pads (or keeps) `up` (rows × r) and `down` (r × d) to `rank` with zero columns/rows, as float32. */
function padded(
  up: Float64Array,
  down: Float64Array,
  rows: number,
  r: number,
  d: number,
  rank: number,
): { up: Float32Array; down: Float32Array } {
  const u = new Float32Array(rows * rank);
  for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) u[i * rank + j] = up[i * r + j]!;
  const dn = new Float32Array(rank * d);
  dn.set(down.subarray(0, r * d));
  return { up: u, down: dn };
}

/**
 * The bases of M − I for every (path, layer), computed once per distinct set of steps (all layers share one
 * unless some step edits a layer subset); a layer no step edits on a path has none.
 */
function layerBases(weights: KvWeights, edit: Edit, path: 'k' | 'v'): (DeltaBasis | undefined)[] {
  const cache = new Map<string, DeltaBasis | undefined>();
  return weights.layers.map((layer) => {
    const key = edit.steps.map((s) => (stepEdits(s, path, layer.index) ? '1' : '0')).join('');
    if (!cache.has(key)) cache.set(key, editDeltaBasis(edit, path, layer.index));
    return cache.get(key);
  });
}

/**
 * The LoRA of `edit` on `weights` at rank `rank` (default and ceiling: the exact rank), truncated as `truncation`
 * says below the exact rank. A projection no step edits (K for a V-only edit, a layer outside a step's subset) gets
 * no module.
 *
 * @example
 *   const lora = await factorEdit(weights, edit, { rank: 64, truncation: 'per-matrix' });
 *   lora.modules.length;   // 32 for a K+V edit of SD 1.x
 */
export async function factorEdit(
  weights: KvWeights,
  edit: Edit,
  options: { rank?: number; truncation?: LoraTruncation } = {},
): Promise<LoraFactors> {
  const d = edit.d;
  if (weights.d !== d) throw new EditError(`the edit has width ${edit.d}, the model's K/V weights take ${weights.d}`);
  const truncation = options.truncation ?? 'per-matrix';
  const bases = { k: layerBases(weights, edit, 'k'), v: layerBases(weights, edit, 'v') };
  const exactRank = Math.max(0, ...[...bases.k, ...bases.v].map((b) => b?.rank ?? 0));
  if (exactRank === 0) throw new EditError('the edit changes no projection (M = I): there is nothing to write as a LoRA');
  const asked = options.rank ?? exactRank;
  if (!Number.isSafeInteger(asked) || asked < 1) throw new EditError(`the LoRA rank must be a whole number ≥ 1, got ${asked}`);
  const rank = Math.min(asked, exactRank);
  const modules: LoraModule[] = [];
  // Shared truncation: one set of right singular vectors of M − I = Z·Q (from ZᵀZ) per basis.
  const shared = new Map<DeltaBasis, { zv: Float64Array; down: Float64Array }>();
  for (const path of ['k', 'v'] as const)
    for (const [li, layer] of weights.layers.entries()) {
      const basis = bases[path][li];
      if (basis === undefined) continue;
      const w = layer[path];
      if (w.length !== layer.width * d)
        throw new EditError(`${layer.module}.to_${path}: ${w.length} weights, expected ${layer.width} × ${d}`);
      const kp = basis.rank;
      const r = Math.min(rank, kp);
      let up: Float64Array;
      let down: Float64Array;
      if (r === kp) {
        up = await weightsTimes(w, layer.width, d, basis.Z, kp);
        down = basis.Q;
      } else if (truncation === 'shared') {
        let s = shared.get(basis);
        if (s === undefined) {
          const v = leadingColumns(symmetricEigen(gram(basis.Z, d, kp), kp).vectors, kp, kp, r);
          s = { zv: matmul(basis.Z, v, d, kp, r), down: matmulTransA(v, basis.Q, kp, r, d) };
          shared.set(basis, s);
        }
        up = await weightsTimes(w, layer.width, d, s.zv, r);
        down = s.down;
      } else {
        const y = await weightsTimes(w, layer.width, d, basis.Z, kp); // ΔW = y·Q
        const v = leadingColumns(symmetricEigen(gram(y, layer.width, kp), kp).vectors, kp, kp, r);
        up = matmul(y, v, layer.width, kp, r);
        down = matmulTransA(v, basis.Q, kp, r, d);
      }
      modules.push({ module: layer.module, path, rows: layer.width, ...padded(up, down, layer.width, r, d, rank) });
    }
  // K before V within a layer, layers in graph order: the order SD_KV_KEYS lists them in.
  const order = new Map(weights.layers.map((l, i) => [l.module, i]));
  modules.sort((a, b) => order.get(a.module)! - order.get(b.module)! || a.path.localeCompare(b.path));
  return { d, rank, exactRank, truncation, modules };
}

/** Aᵀ·B for A (m × n) and B (m × p): n × p. */
function matmulTransA(a: Float64Array, b: Float64Array, m: number, n: number, p: number): Float64Array {
  const out = new Float64Array(n * p);
  for (let i = 0; i < m; i++)
    for (let r = 0; r < n; r++) {
      const x = a[i * n + r]!;
      if (x === 0) continue;
      for (let j = 0; j < p; j++) out[r * p + j]! += x * b[i * p + j]!;
    }
  return out;
}

/** The error of a truncation at one rank, over all edited modules stacked. */
export interface TruncationError {
  truncation: LoraTruncation;
  rank: number;
  /** ‖ΔW_r − ΔW‖_F / ‖ΔW‖_F over every edited module stacked. */
  relative: number;
  /** The largest per-module relative error of ΔW. */
  worstModule: number;
  /** ‖(ΔW_r − ΔW)·Eᵀ‖_F / ‖ΔW·Eᵀ‖_F: the error of the K/V outputs' change on text states E (when given). */
  output?: number;
}

/**
 * The error of ΔW (and, given text states `states` — count × d rows, e.g. the edit's own source rows — of the K/V
 * outputs' change on them) at each rank for both truncations, computed exactly from spectra rather than by forming
 * each truncated LoRA: with ΔW = Y·Q and a truncation keeping the directions V_r of an orthonormal V (k' × k'),
 * ‖ΔW − ΔW_r‖² = Σ_{i,j≥r} (VᵀYᵀYV)_ij δ_ij and ‖(ΔW − ΔW_r)Eᵀ‖² = Σ_{i,j≥r} (VᵀYᵀYV)_ij (VᵀFᵀFV)_ij with F = E·Qᵀ.
 * One eigendecomposition per module and one per basis, whatever the number of ranks.
 *
 * @example
 *   (await truncationErrors(weights, edit, [4, 16, 64])).find((e) => e.truncation === 'shared' && e.rank === 16)?.relative;
 */
export async function truncationErrors(
  weights: KvWeights,
  edit: Edit,
  ranks: readonly number[],
  states?: { data: Float32Array; count: number },
): Promise<TruncationError[]> {
  const d = edit.d;
  type Sums = { err: number; norm: number; worst: number; outErr: number; outNorm: number };
  const total = new Map<string, Sums>();
  const add = (truncation: LoraTruncation, rank: number, err: number, norm: number, outErr: number, outNorm: number): void => {
    const key = `${truncation} ${rank}`;
    const t = total.get(key) ?? { err: 0, norm: 0, worst: 0, outErr: 0, outNorm: 0 };
    t.err += Math.max(err, 0);
    t.norm += norm;
    t.worst = Math.max(t.worst, norm > 0 ? Math.sqrt(Math.max(err, 0) / norm) : 0);
    t.outErr += Math.max(outErr, 0);
    t.outNorm += outNorm;
    total.set(key, t);
  };
  // Σ_{i,j≥r} A_ij B_ij for every r (suffix sums over the lower-right blocks), for symmetric k × k A and B.
  const tailSums = (a: Float64Array, b: Float64Array | undefined, k: number, diagonalOnly: boolean): Float64Array => {
    const out = new Float64Array(k + 1);
    for (let r = k - 1; r >= 0; r--) {
      let s = a[r * k + r]! * (b === undefined ? 1 : b[r * k + r]!);
      if (!diagonalOnly && b !== undefined) for (let j = r + 1; j < k; j++) s += 2 * a[r * k + j]! * b[r * k + j]!;
      out[r] = out[r + 1]! + s;
    }
    return out;
  };
  const rotate = (g: Float64Array, v: Float64Array, k: number): Float64Array => {
    // Vᵀ·G·V
    const gv = matmul(g, v, k, k, k);
    return matmulTransA(v, gv, k, k, k);
  };
  for (const path of ['k', 'v'] as const) {
    const bases = layerBases(weights, edit, path);
    const perBasis = new Map<DeltaBasis, { shared: Float64Array; ftf?: Float64Array; sharedK?: Float64Array }>();
    for (const [li, layer] of weights.layers.entries()) {
      const basis = bases[li];
      if (basis === undefined) continue;
      const kp = basis.rank;
      let pb = perBasis.get(basis);
      if (pb === undefined) {
        const shared = symmetricEigen(gram(basis.Z, d, kp), kp).vectors;
        pb = { shared };
        if (states !== undefined) {
          const f = matmulTransB(states.data, basis.Q, states.count, d, kp); // count × k'
          pb.ftf = gram(f, states.count, kp);
          pb.sharedK = rotate(pb.ftf, shared, kp);
        }
        perBasis.set(basis, pb);
      }
      const y = await weightsTimes(layer[path], layer.width, d, basis.Z, kp);
      const g = gram(y, layer.width, kp);
      let norm = 0;
      for (let i = 0; i < kp; i++) norm += g[i * kp + i]!;
      let outNorm = 0;
      if (pb.ftf !== undefined) for (let i = 0; i < kp * kp; i++) outNorm += g[i]! * pb.ftf[i]!;
      const own = symmetricEigen(g, kp);
      const lambda = new Float64Array(kp * kp);
      for (let j = 0; j < kp; j++) lambda[j * kp + j] = Math.max(own.values[j]!, 0);
      const ownDelta = tailSums(lambda, undefined, kp, true);
      const ownOut = pb.ftf !== undefined ? tailSums(lambda, rotate(pb.ftf, own.vectors, kp), kp, true) : undefined;
      const t = rotate(g, pb.shared, kp);
      const sharedDelta = tailSums(t, undefined, kp, true);
      const sharedOut = pb.sharedK !== undefined ? tailSums(t, pb.sharedK, kp, false) : undefined;
      for (const rank of ranks) {
        const r = Math.min(rank, kp);
        add('per-matrix', rank, ownDelta[r]!, norm, ownOut?.[r] ?? 0, outNorm);
        add('shared', rank, sharedDelta[r]!, norm, sharedOut?.[r] ?? 0, outNorm);
      }
    }
  }
  const out: TruncationError[] = [];
  for (const truncation of LORA_TRUNCATIONS)
    for (const rank of ranks) {
      const t = total.get(`${truncation} ${rank}`);
      if (t === undefined) continue;
      out.push({
        truncation,
        rank,
        relative: t.norm > 0 ? Math.sqrt(t.err / t.norm) : 0,
        worstModule: t.worst,
        ...(states !== undefined ? { output: t.outNorm > 0 ? Math.sqrt(t.outErr / t.outNorm) : 0 } : {}),
      });
    }
  return out;
}

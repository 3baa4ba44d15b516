// A LoRA of the cross-attention K/V projections read back as an Edit, so that `generate --edit` and `edit --on`
// take the LoRAs time-edit writes. A TIME edit changes every projection W of a path by the same M (W' = W·M), so
// M − I = P is recovered from the LoRA's ΔW_l = scale·up_l·down_l and the model's own weights by least squares over
// the layers the LoRA touches: P = (Σ W_lᵀW_l)⁻¹ Σ W_lᵀΔW_l when they have at least d output units together (exact
// when the LoRA is exact or truncated with one shared lora_down; the pseudo-inverse when Σ W_lᵀW_l is singular),
// else the minimum-norm P = Wᵀ(WWᵀ)⁻¹ΔW, which patches those layers exactly too. A per-matrix truncated LoRA has no single M; the least-squares M is then the
// closest one, and `residual` says how far it is. The LoRA must come from this tool (its `time_edit.*` metadata:
// the fingerprint of the model it was made for is checked like an edit file's).
import { type Edit, EditError, type EditStep } from './edit.js';
import type { KvWeights } from './lora-factor.js';
import type { LoraFile, LoraFileModule } from './lora-file.js';
import { LORA_FORMAT } from './lora-file.js';
import { choleskySolve, LinalgError, matmul, minimumNormSolve } from './lora-linalg.js';

/** What loraToEdit recovered: the edit, and how well one M per path reproduces the LoRA. */
export interface RecoveredEdit {
  edit: Edit;
  /** max over modules of ‖W_l·P − ΔW_l‖_F / ‖ΔW_l‖_F (0 up to float rounding for the LoRAs edit --lora writes at the exact rank) */
  residual: number;
}

interface StepMeta {
  pairs?: { source: string; destination: string }[];
  preserve?: string[];
  lambda?: number;
  augmentations?: string[];
}

/** M − I = Aᵀ·B for one path: A and B are rows × d (float64), so that a step has D = A, G = B. */
interface Delta {
  A: Float64Array;
  B: Float64Array;
  rows: number;
}

/** Whether two float32 arrays hold the same values. */
function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * P = M − I for one path from its modules and the model's weights (see the header comment). The fit uses the widest
 * modules until they have 2d output units (all of them when fewer), which recovers P exactly from an exact or shared
 * LoRA, and the residual is measured on those and on the narrowest two (whose weights the fit did not see).
 */
function recoverDelta(mods: LoraFileModule[], weights: KvWeights, path: 'k' | 'v'): { delta: Delta; residual: number } {
  const d = weights.d;
  const byModule = new Map(weights.layers.map((l) => [l.module, l]));
  const weightOf = (m: LoraFileModule): Float32Array => {
    const layer = byModule.get(m.module);
    if (layer === undefined) throw new EditError(`the model has no cross-attention module ${m.module}`);
    if (layer.width !== m.rows || m.d !== d)
      throw new EditError(`${m.module}.to_${path}: the LoRA is [${m.rows}, ${m.d}], the model's weight is [${layer.width}, ${d}]`);
    return layer[path];
  };
  const byWidth = [...mods].sort((a, b) => b.rows - a.rows);
  const fit: LoraFileModule[] = [];
  let fitRows = 0;
  for (const m of byWidth) {
    if (fitRows >= 2 * d) break;
    fit.push(m);
    fitRows += m.rows;
  }
  // Modules with one lora_down (an exact or shared LoRA) give a low-rank P = (S⁻¹X)·down with X = Σ scale·Wᵀ·up.
  const down0 = fit[0]!.down;
  const shared = mods.every((m) => m.rank === fit[0]!.rank && sameValues(m.down, down0));
  const rank = fit[0]!.rank;
  // X: d × c with P = X·Bc, where Bc is the shared down (c = rank) or I (c = d).
  const c = shared ? rank : d;
  const X = new Float64Array(d * c);
  for (const m of fit) {
    const w = weightOf(m);
    const rhs = shared ? m.up : matmul(m.up, m.down, m.rows, m.rank, d); // rows × c
    for (let r = 0; r < m.rows; r++)
      for (let i = 0; i < d; i++) {
        const x = w[r * d + i]! * m.scale;
        if (x === 0) continue;
        for (let j = 0; j < c; j++) X[i * c + j]! += x * rhs[r * c + j]!;
      }
  }
  let Y: Float64Array; // d × c, P = Y·Bc
  try {
    if (fitRows >= d) {
      const S = new Float64Array(d * d);
      for (const m of fit) {
        const w = weightOf(m);
        for (let r = 0; r < m.rows; r++) {
          const wr = r * d;
          for (let i = 0; i < d; i++) {
            const x = w[wr + i]!;
            if (x === 0) continue;
            const si = i * d;
            for (let j = i; j < d; j++) S[si + j]! += x * w[wr + j]!;
          }
        }
      }
      for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) S[i * d + j] = S[j * d + i]!;
      // Weights that ignore some of their inputs (zero columns, as in a model whose text states carry features the
      // UNet does not read: models/README.md, "Text-state lift") make S singular; the minimum-norm P then leaves
      // those inputs alone and still gives W·(I + P) = W·M exactly.
      try {
        Y = choleskySolve(S, X, d, c);
      } catch (err) {
        if (!(err instanceof LinalgError)) throw err;
        Y = minimumNormSolve(S, X, d, c).x;
      }
    } else {
      // Minimum norm: P = Wᵀ(WWᵀ)⁻¹ΔW over the stacked W (fitRows × d).
      const W = new Float64Array(fitRows * d);
      const R = new Float64Array(fitRows * c);
      let at = 0;
      for (const m of fit) {
        W.set(weightOf(m), at * d);
        const rhs = shared ? m.up : matmul(m.up, m.down, m.rows, m.rank, d);
        for (let i = 0; i < m.rows * c; i++) R[at * c + i] = rhs[i]! * m.scale;
        at += m.rows;
      }
      const wwt = new Float64Array(fitRows * fitRows);
      for (let i = 0; i < fitRows; i++)
        for (let j = i; j < fitRows; j++) {
          let s = 0;
          for (let p = 0; p < d; p++) s += W[i * d + p]! * W[j * d + p]!;
          wwt[i * fitRows + j] = s;
          wwt[j * fitRows + i] = s;
        }
      const Z = choleskySolve(wwt, R, fitRows, c);
      Y = new Float64Array(d * c);
      for (let r = 0; r < fitRows; r++)
        for (let i = 0; i < d; i++) {
          const x = W[r * d + i]!;
          if (x !== 0) for (let j = 0; j < c; j++) Y[i * c + j]! += x * Z[r * c + j]!;
        }
    }
  } catch (err) {
    if (err instanceof LinalgError)
      throw new EditError(`cannot recover the edit's M from the LoRA: the model's to_${path} weights are rank-deficient (${err.message})`);
    throw err;
  }
  // The residual ‖W·P − ΔW‖ / ‖ΔW‖ of the fitted modules and the two narrowest.
  let residual = 0;
  for (const m of new Set([...fit, ...byWidth.slice(-2)])) {
    const w = weightOf(m);
    const wy = matmul(w, Y, m.rows, d, c); // rows × c
    const want = shared ? m.up : matmul(m.up, m.down, m.rows, m.rank, d);
    const got = shared ? matmul(wy, m.down, m.rows, c, d) : wy;
    const ref = shared ? matmul(want, m.down, m.rows, c, d) : want;
    let err = 0;
    let norm = 0;
    for (let i = 0; i < got.length; i++) {
      err += (got[i]! - m.scale * ref[i]!) ** 2;
      norm += (m.scale * ref[i]!) ** 2;
    }
    residual = Math.max(residual, norm > 0 ? Math.sqrt(err / norm) : Math.sqrt(err));
  }
  // P = Y·Bc = Aᵀ·B with A = Yᵀ (c × d) and B = Bc (c × d).
  const A = new Float64Array(c * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < c; j++) A[j * d + i] = Y[i * c + j]!;
  let B: Float64Array;
  if (shared) B = Float64Array.from(down0);
  else {
    B = new Float64Array(d * d);
    for (let i = 0; i < d; i++) B[i * d + i] = 1;
  }
  return { delta: { A, B, rows: c }, residual };
}

/** Whether two deltas describe the same P (relative Frobenius difference ≤ 1e-5), compared through their products. */
function sameDelta(a: Delta, b: Delta, d: number): boolean {
  const pa = matmulTransA(a.A, a.B, a.rows, d);
  const pb = matmulTransA(b.A, b.B, b.rows, d);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < pa.length; i++) {
    diff += (pa[i]! - pb[i]!) ** 2;
    norm += pb[i]! ** 2;
  }
  return Math.sqrt(diff) <= 1e-5 * Math.sqrt(norm);
}

/** Aᵀ·B for A, B (rows × d): d × d. */
function matmulTransA(a: Float64Array, b: Float64Array, rows: number, d: number): Float64Array {
  const out = new Float64Array(d * d);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < d; i++) {
      const x = a[r * d + i]!;
      if (x !== 0) for (let j = 0; j < d; j++) out[i * d + j]! += x * b[r * d + j]!;
    }
  return out;
}

/**
 * The Edit a LoRA written by this tool stands for, on the model whose K/V weights are `weights`; with
 * `expectFingerprint`, a LoRA made for another model is refused (EditError), as loadEdit refuses edit files.
 *
 * @example
 *   const { edit, residual } = loraToEdit(readLoraFile('out/edit-lora.safetensors'), kvWeightsOfOnnx(ctx.unet, ctx.map), ctx.fingerprint);
 */
export function loraToEdit(lora: LoraFile, weights: KvWeights, expectFingerprint?: string): RecoveredEdit {
  const md = lora.metadata;
  if (md['time_edit.format'] !== LORA_FORMAT || !md['time_edit.fingerprint'])
    throw new EditError(
      `${lora.path} is a LoRA of the cross-attention K/V projections, but not one time-edit wrote (no time_edit.format "${LORA_FORMAT}" ` +
        'and fingerprint in its metadata), so it cannot be checked against this model; load it in the tool it was made for',
    );
  const fingerprint = md['time_edit.fingerprint'];
  if (expectFingerprint !== undefined && fingerprint !== expectFingerprint)
    throw new EditError(
      `${lora.path} was made for a different model (fingerprint ${fingerprint}, this model's is ${expectFingerprint}); recompute the edit for this model`,
    );
  const d = weights.d;
  for (const m of lora.modules)
    if (m.d !== d) throw new EditError(`${lora.path}: its modules take width ${m.d}, this model's K/V take ${d}`);
  let metas: StepMeta[] = [];
  try {
    const parsed = JSON.parse(md['time_edit.steps'] ?? '[]') as unknown;
    if (Array.isArray(parsed)) metas = parsed.filter((x): x is StepMeta => typeof x === 'object' && x !== null);
  } catch {
    throw new EditError(`${lora.path}: its time_edit.steps metadata is not JSON`);
  }
  const pairs = metas.flatMap((m) =>
    Array.isArray(m.pairs) ? m.pairs.filter((p) => typeof p?.source === 'string' && typeof p?.destination === 'string') : [],
  );
  const lambda = metas.find((m) => typeof m.lambda === 'number' && m.lambda > 0)?.lambda ?? 0.1;
  const strings = (x: unknown): string[] => (Array.isArray(x) ? x.filter((e): e is string => typeof e === 'string') : []);
  const indexOf = new Map(weights.layers.map((l) => [l.module, l.index]));
  const recovered: { path: 'k' | 'v'; delta: Delta; layers: number[] }[] = [];
  let residual = 0;
  for (const path of ['k', 'v'] as const) {
    const mods = lora.modules.filter((m) => m.path === path);
    if (mods.length === 0) continue;
    const r = recoverDelta(mods, weights, path);
    residual = Math.max(residual, r.residual);
    recovered.push({ path, delta: r.delta, layers: mods.map((m) => indexOf.get(m.module)!).sort((a, b) => a - b) });
  }
  if (recovered.length === 0) throw new EditError(`${lora.path} holds no module`);
  const base = {
    pairs,
    preserve: strings(metas[0]?.preserve),
    lambda,
    augmentations: strings(metas[0]?.augmentations),
  };
  const allLayers = (layers: number[]) => (layers.length === weights.layers.length ? {} : { layers });
  const steps: EditStep[] = [];
  const [first, second] = recovered;
  const factors = (delta: Delta) => ({ D: Float32Array.from(delta.A), G: Float32Array.from(delta.B), rows: delta.rows });
  const same = second !== undefined && first!.layers.join() === second.layers.join() && sameDelta(first!.delta, second.delta, d);
  if (same) steps.push({ ...base, mode: 'kv', ...allLayers(first!.layers), ...factors(first!.delta) });
  else for (const r of recovered) steps.push({ ...base, mode: r.path, ...allLayers(r.layers), ...factors(r.delta) });
  return { edit: { d, fingerprint, steps }, residual };
}

// The measurements behind the LoRA rank and truncation defaults (`time-edit bench lora`, docs/lora.md): for each
// rank and both truncations, the relative error of ΔW, of the K/V outputs' change on the edit's own text states,
// and, on a model that can sample, the change of the UNet's noise prediction against the exact edit, relative to
// what the exact edit changes. SD-shaped weights without a UNet are made here too (syntheticSdWeights), since no
// real SD 1.x checkpoint ships with the project: their numbers are a stand-in and docs/lora.md says how they are made.
import type { CrossAttentionMap } from '../model/cross-attention.js';
import { decodeModel, encodeModel, type LoadedModel, setTensorFloat32 } from '../model/onnx/index.js';
import type { Pipeline } from '../model/pipeline.js';
import { gaussianNoise } from '../sample/noise.js';
import { patchUnetWeights } from './apply.js';
import type { Edit } from './edit.js';
import { factorEdit, type KvWeights, type LoraFactors, type LoraTruncation, truncationErrors } from './lora-factor.js';
import { attentionModule } from './lora-modules.js';
import { SD_ATTENTION_LAYERS } from '../checkpoint/sd-keys.js';

/** One row of the table: a truncation at a rank. */
export interface LoraBenchRow {
  truncation: LoraTruncation;
  rank: number;
  /** ‖ΔW_r − ΔW‖ / ‖ΔW‖ over all modules */
  deltaError: number;
  /** the worst module's ‖ΔW_r − ΔW‖ / ‖ΔW‖ */
  worstModule: number;
  /** ‖(ΔW_r − ΔW)·Cᵀ‖ / ‖ΔW·Cᵀ‖ on the edit's source rows C */
  outputError: number;
  /** ‖ε_r − ε_exact‖ / ‖ε_exact − ε_unedited‖ of the UNet's noise prediction (models that can sample) */
  unetChange?: number;
  /** seconds to factor the LoRA at this rank */
  factorSeconds: number;
  /** parameters in the LoRA file (up + down of every module) */
  parameters: number;
}

/** The prompts and timesteps the UNet change is measured on: the edited prompt, a generality and two specificity prompts. */
export const UNET_PROBE_PROMPTS = ['a circle', 'a big circle', 'a square', 'a triangle'];
export const UNET_PROBE_TIMESTEPS = [901, 501, 101];

async function timed<T>(f: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const t0 = performance.now();
  const value = await f();
  return { value, seconds: (performance.now() - t0) / 1000 };
}

/** The table of errors at each rank (`ranks` ascending; the exact rank is added) for both truncations. */
export async function loraErrorTable(
  weights: KvWeights,
  edit: Edit,
  sourceRows: { data: Float32Array; count: number },
  ranks: readonly number[],
  options: { factor?: boolean } = {},
): Promise<{ rows: LoraBenchRow[]; exactRank: number; spectraSeconds: number }> {
  const exactRank = (await factorEdit(weights, edit, {})).exactRank;
  const all = [...new Set([...ranks.filter((r) => r < exactRank), exactRank])];
  const spectra = await timed(() => truncationErrors(weights, edit, all, sourceRows));
  const rows: LoraBenchRow[] = [];
  for (const e of spectra.value) {
    const factor =
      options.factor === false ? undefined : await timed(() => factorEdit(weights, edit, { rank: e.rank, truncation: e.truncation }));
    const r = Math.min(e.rank, exactRank);
    rows.push({
      truncation: e.truncation,
      rank: r,
      deltaError: e.relative,
      worstModule: e.worstModule,
      outputError: e.output ?? 0,
      factorSeconds: factor?.seconds ?? Number.NaN,
      parameters: 2 * weights.layers.reduce((s, l) => s + r * (l.width + weights.d), 0),
    });
  }
  return { rows, exactRank, spectraSeconds: spectra.seconds };
}

/** A UNet graph whose K/V initializers are W + up·down for the LoRA's modules. */
function unetWithLora(unet: LoadedModel, map: CrossAttentionMap, weights: KvWeights, lora: LoraFactors): Uint8Array {
  const model = decodeModel(unet.bytes);
  const inits = new Map(model.graph!.initializer.map((t) => [t.name ?? '', t]));
  const d = weights.d;
  for (const m of lora.modules) {
    const li = weights.layers.findIndex((l) => l.module === m.module);
    const layer = weights.layers[li]!;
    const w = layer[m.path];
    const out = new Float32Array(w.length); // ONNX layout [d, out]
    for (let i = 0; i < m.rows; i++)
      for (let j = 0; j < d; j++) {
        let s = w[i * d + j]!;
        for (let k = 0; k < lora.rank; k++) s += m.up[i * lora.rank + k]! * m.down[k * d + j]!;
        out[j * m.rows + i] = s;
      }
    setTensorFloat32(inits.get(map.layers[li]![m.path].initializer)!, out);
  }
  return encodeModel(model);
}

/**
 * Adds the UNet change to `rows` (in place): the noise prediction at UNET_PROBE_TIMESTEPS on seeded latents for
 * UNET_PROBE_PROMPTS, with each row's LoRA patched in, against the exact edit's and the unedited model's.
 */
export async function measureUnetChange(
  pipeline: Pipeline,
  unet: LoadedModel,
  map: CrossAttentionMap,
  weights: KvWeights,
  edit: Edit,
  rows: LoraBenchRow[],
): Promise<void> {
  const E = await pipeline.encodePrompts(UNET_PROBE_PROMPTS);
  const side = pipeline.defaultSize / pipeline.vaeScaleFactor;
  const dims: [number, number, number, number] = [UNET_PROBE_PROMPTS.length, pipeline.latentChannels, side, side];
  const latents = gaussianNoise(
    1234,
    dims.reduce((a, b) => a * b, 1),
  );
  const predict = async (p: Pipeline): Promise<Float32Array[]> => {
    const out: Float32Array[] = [];
    for (const t of UNET_PROBE_TIMESTEPS)
      out.push(
        await p.runUnet({
          sample: Float32Array.from(latents),
          dims,
          timestep: t,
          encoderHiddenStates: { dims: [dims[0], E.length / dims[0] / weights.d, weights.d], data: E },
        }),
      );
    return out;
  };
  const withBytes = async (bytes: Uint8Array): Promise<Float32Array[]> => {
    const p = await pipeline.withUnet({ modelBytes: bytes });
    try {
      return await predict(p);
    } finally {
      await p.close();
    }
  };
  const base = await predict(pipeline);
  const exact = await withBytes(encodeModel(await patchUnetWeights(unet, map, edit)));
  let effect = 0;
  for (let t = 0; t < base.length; t++) for (let i = 0; i < base[t]!.length; i++) effect += (exact[t]![i]! - base[t]![i]!) ** 2;
  for (const row of rows) {
    const lora = await factorEdit(weights, edit, { rank: row.rank, truncation: row.truncation });
    const got = await withBytes(unetWithLora(unet, map, weights, lora));
    let err = 0;
    for (let t = 0; t < got.length; t++) for (let i = 0; i < got[t]!.length; i++) err += (got[t]![i]! - exact[t]![i]!) ** 2;
    row.unetChange = Math.sqrt(err / effect);
  }
}

/** A seeded Gaussian matrix (rows × cols) with singular values decaying as i^(−1/2), like trained projections' (not isotropic). */
function anisotropic(seed: number, rows: number, cols: number, scale: number): Float32Array {
  const g = gaussianNoise(seed, rows * cols);
  // column j scaled by (j+1)^(-1/2) after a fixed random rotation of the columns would be costly; scaling the
  // columns of a Gaussian matrix gives the same spectrum shape in a random basis of the rows' space.
  const perm = gaussianNoise(seed + 1, cols);
  const order = Array.from({ length: cols }, (_, j) => j).sort((a, b) => perm[a]! - perm[b]!);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j] = (g[i * cols + j]! * scale) / Math.sqrt(order[j]! + 1);
  return out;
}

/**
 * Random SD 1.x-shaped K/V weights (16 layers, widths 320/640/1280, d = 768; seeded, anisotropic).
 *
 * @example
 *   syntheticSdWeights(0).layers[6].width;   // 1280
 */
export function syntheticSdWeights(seed: number, d = 768): KvWeights {
  return {
    d,
    layers: SD_ATTENTION_LAYERS.map((l) => ({
      index: l.index,
      module: attentionModule(l),
      width: l.width,
      k: anisotropic(seed + 10 * l.index, l.width, d, 0.05),
      v: anisotropic(seed + 10 * l.index + 5, l.width, d, 0.05),
    })),
  };
}

/**
 * Text states of width `d` (count × d) made from lower-width ones: each row lifted by a seeded random isometry
 * R (d × w, orthonormal columns; from `seed`) plus Gaussian noise (from `noiseSeed`) of relative size `noise` in all d
 * dimensions, so that the rows keep their real structure (the toy model's trained text encoder) while spanning all of d.
 */
export function liftRows(
  rows: Float32Array,
  count: number,
  w: number,
  d: number,
  seed: number,
  noise: number,
  noiseSeed = seed + 7,
): Float32Array {
  const g = gaussianNoise(seed, d * w);
  // Gram–Schmidt on the columns of a Gaussian d × w matrix
  const r = new Float64Array(d * w);
  for (let j = 0; j < w; j++) {
    for (let i = 0; i < d; i++) r[i * w + j] = g[i * w + j]!;
    for (let pass = 0; pass < 2; pass++)
      for (let q = 0; q < j; q++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += r[i * w + q]! * r[i * w + j]!;
        for (let i = 0; i < d; i++) r[i * w + j]! -= dot * r[i * w + q]!;
      }
    let n = 0;
    for (let i = 0; i < d; i++) n += r[i * w + j]! ** 2;
    n = Math.sqrt(n);
    for (let i = 0; i < d; i++) r[i * w + j]! /= n;
  }
  const eps = gaussianNoise(noiseSeed, count * d);
  const out = new Float32Array(count * d);
  for (let c = 0; c < count; c++) {
    let norm = 0;
    for (let j = 0; j < w; j++) norm += rows[c * w + j]! ** 2;
    const sigma = (noise * Math.sqrt(norm)) / Math.sqrt(d);
    for (let i = 0; i < d; i++) {
      let s = 0;
      for (let j = 0; j < w; j++) s += r[i * w + j]! * rows[c * w + j]!;
      out[c * d + i] = s + sigma * eps[c * d + i]!;
    }
  }
  return out;
}

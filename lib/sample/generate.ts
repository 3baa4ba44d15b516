// Text-to-image sampling: seeded latents, the scheduler loop with classifier-free guidance (unconditional and
// conditional rows in one UNet call, as diffusers' concat([uncond, cond])), VAE decode, RGB bytes.
// Before any work, the memory a run needs is estimated (estimateGenerateMemory) and a run that cannot fit in the
// machine's memory is refused, instead of growing for minutes and failing with an allocation error.
import { totalmem } from 'node:os';
import { InputError, invalidInput } from '../errors.js';
import type { Feed, Pipeline } from '../model/pipeline.js';
import { checkSeed, gaussianNoise } from './noise.js';
import { createScheduler, parseSchedulerName, type SchedulerName } from './schedulers.js';

/** What the UNet is conditioned on, replacing the text encoder's output. */
export interface UnetConditioning {
  /** [77·d] (one state for every prompt) or [P·77·d] (one per prompt, in prompt order), float32 */
  encoderHiddenStates: Float32Array;
  /**
   * Extra float inputs of a withUnet() UNet, by input name. Each has as many rows as encoderHiddenStates (1 or P);
   * it is fed as [batch, …] with the trailing dims from the input's metadata when fixed, else [batch, 77, k].
   */
  extraInputs?: Record<string, Float32Array>;
}

export interface GenerateOptions {
  /** one image per (prompt, seed) pair, prompt-major: prompts[0] with every seed, then prompts[1], … */
  prompts: string[];
  /** replaces the empty prompt as the unconditional branch of classifier-free guidance */
  negativePrompt?: string;
  /** integers in [0, 2^53); each image's initial noise depends only on its seed (see noise.ts) */
  seeds: number[];
  steps: number;
  /** classifier-free guidance scale g: ε = ε_u + g (ε_c − ε_u); g ≤ 1 runs the conditional branch only */
  guidance: number;
  height: number;
  width: number;
  /** default: the pipeline's scheduler_config.json class */
  scheduler?: SchedulerName;
  /** replaces the text encoder (prompts still label the images); both branches must be given */
  conditioning?: { cond: UnetConditioning; uncond: UnetConditioning };
  /** images per UNet call (×2 rows with guidance); default 8 */
  batchSize?: number;
  /** called after every UNet call with (calls done, calls in total) */
  onProgress?: (done: number, total: number) => void;
  /** refuse a run whose memory estimate (estimateGenerateMemory) exceeds this many bytes; default os.totalmem() */
  maxMemoryBytes?: number;
}

/** The parts of a run's memory estimate, in bytes (see estimateGenerateMemory). */
export interface MemoryEstimate {
  /** the latents of one chunk: x, the UNet input (doubled for guidance) and output, eps */
  latents: number;
  /** the UNet's activations for one chunk (one self-attention map per UNet row) */
  activations: number;
  /** the VAE's float output for one chunk, in this process and in the worker */
  decoded: number;
  /** the RGB bytes of every image of the run, all kept until the run returns */
  images: number;
  total: number;
}

/**
 * An estimate, not a measurement, of the memory a generate() run needs, in bytes; deliberately low (what surely is
 * needed), so that a refusal is certain to be right. With n = min(batchSize, images), rows = 2n with guidance > 1
 * (else n), a latent of c × h × w (h = height / VAE factor) and float32 (4 bytes):
 *   latents     = 4 · c·h·w · (2n + 2·rows)             x and eps, the UNet's input and output
 *   activations = 4 · rows · (h·w)²                      one self-attention score map per row at the latent size
 *                                                        (a UNet's first attention layer holds at least this)
 *   decoded     = 2 · 4 · n · 3·height·width             the VAE output, in the worker and here
 *   images      = prompts · seeds · 3·height·width       the RGB bytes returned
 * Example: `estimateGenerateMemory(pipeline, { ...options, height: 8192, width: 8192 }).total` → ~1.4e14 for the toy model.
 */
export function estimateGenerateMemory(
  pipeline: Pipeline,
  o: Pick<GenerateOptions, 'prompts' | 'seeds' | 'guidance' | 'height' | 'width' | 'batchSize'>,
): MemoryEstimate {
  const images = o.prompts.length * o.seeds.length;
  const n = Math.min(o.batchSize ?? 8, images);
  const rows = o.guidance > 1 ? 2 * n : n;
  const f = pipeline.vaeScaleFactor;
  const positions = (o.height / f) * (o.width / f);
  const pixels = o.height * o.width;
  const latents = 4 * pipeline.latentChannels * positions * (2 * n + 2 * rows);
  const activations = 4 * rows * positions * positions;
  const decoded = 2 * 4 * n * 3 * pixels;
  const rgb = images * 3 * pixels;
  return { latents, activations, decoded, images: rgb, total: latents + activations + decoded + rgb };
}

function formatBytes(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toPrecision(3)} ${units[u]}`;
}

export interface GeneratedImage {
  prompt: string;
  promptIndex: number;
  seed: number;
  width: number;
  height: number;
  /** height × width × 3 bytes, row-major RGB */
  rgb: Uint8Array;
}

/** Throws an InputError about the option `argument` (named as in GenerateOptions). */
function fail(argument: string, message: string, received?: unknown): never {
  throw new InputError(argument, message, { received });
}

/**
 * Checks every option before any model work, so that bad input fails fast and writes nothing. A bad option is an
 * InputError whose `argument` is the GenerateOptions field (`'steps'`, `'height'`, `'conditioning.cond…'`).
 * Example: `validateGenerateOptions(pipeline, { ...options, height: 33 })` throws "height must be a positive multiple of 32 …".
 */
export function validateGenerateOptions(pipeline: Pipeline, o: GenerateOptions): void {
  if (!Array.isArray(o.prompts) || o.prompts.length === 0) fail('prompts', 'no prompts: give at least one prompt', o.prompts);
  o.prompts.forEach((p, i) => typeof p === 'string' || fail('prompts', `prompt ${i} is not a string`, p));
  if (!Array.isArray(o.seeds) || o.seeds.length === 0) fail('seeds', 'no seeds: give at least one seed', o.seeds);
  for (const s of o.seeds) {
    try {
      checkSeed(s);
    } catch (err) {
      fail('seeds', (err as Error).message, s);
    }
  }
  if (!Number.isInteger(o.steps) || o.steps <= 0) throw invalidInput('steps', 'a positive integer', o.steps);
  if (typeof o.guidance !== 'number' || !Number.isFinite(o.guidance) || o.guidance < 0)
    throw invalidInput('guidance', 'a number ≥ 0', o.guidance);
  const f = pipeline.sizeMultiple;
  for (const [name, v] of [
    ['height', o.height],
    ['width', o.width],
  ] as const) {
    if (!Number.isInteger(v) || v <= 0 || v % f !== 0)
      throw invalidInput(name, `a positive multiple of ${f} for this model (VAE factor ${pipeline.vaeScaleFactor} × UNet downsampling)`, v);
  }
  if (o.scheduler !== undefined) parseSchedulerName(o.scheduler);
  if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1))
    throw invalidInput('batchSize', 'a positive integer', o.batchSize);
  if (o.maxMemoryBytes !== undefined && !(typeof o.maxMemoryBytes === 'number' && o.maxMemoryBytes > 0))
    throw invalidInput('maxMemoryBytes', 'a number > 0', o.maxMemoryBytes);
  const limit = o.maxMemoryBytes ?? totalmem();
  const need = estimateGenerateMemory(pipeline, o);
  if (need.total > limit) {
    fail(
      'height',
      `the run (height ${o.height}, width ${o.width}, batchSize ${o.batchSize ?? 8}) needs an estimated ${formatBytes(need.total)}, more than ${o.maxMemoryBytes === undefined ? "this machine's memory" : 'maxMemoryBytes'} (${formatBytes(limit)}): use smaller images or a smaller batch`,
      o.height,
    );
  }
  if (o.conditioning !== undefined) {
    if (o.negativePrompt !== undefined)
      fail('negativePrompt', 'negativePrompt and conditioning cannot be combined: conditioning.uncond is the unconditional branch');
    const per = pipeline.sequenceLength * pipeline.textWidth;
    for (const [name, c] of [
      ['cond', o.conditioning.cond],
      ['uncond', o.conditioning.uncond],
    ] as const) {
      const what = `conditioning.${name}.encoderHiddenStates`;
      if (c === undefined || !(c.encoderHiddenStates instanceof Float32Array))
        fail(what, `${what} must be a Float32Array`, c?.encoderHiddenStates);
      const n = c.encoderHiddenStates.length;
      if (n !== per && n !== per * o.prompts.length)
        fail(what, `${what} has ${n} values; expected ${per} (77×${pipeline.textWidth}) or ${per * o.prompts.length} (one per prompt)`);
    }
  }
  const extras = pipeline.unetExtraInputs;
  for (const e of extras) {
    for (const name of ['cond', 'uncond'] as const) {
      const what = `conditioning.${name}.extraInputs`;
      const v = o.conditioning?.[name].extraInputs?.[e.name];
      if (!(v instanceof Float32Array)) fail(what, `this UNet needs the extra input '${e.name}': pass it in ${what}`, v);
      const rows = o.conditioning![name].encoderHiddenStates.length / (pipeline.sequenceLength * pipeline.textWidth);
      if (v.length === 0 || v.length % rows !== 0)
        fail(`${what}.${e.name}`, `${what}.${e.name} has ${v.length} values: not ${rows} equal rows like its encoderHiddenStates`);
    }
  }
}

/** Rows of a [rows, …] tensor (rows = 1: shared by every prompt, or P: one per prompt) for the given prompt indices. */
function gatherRows(src: Float32Array, rows: number, promptIdx: number[], what: string): Float32Array {
  const per = src.length / rows;
  if (!Number.isInteger(per) || per === 0) throw new InputError(what, `${what} has ${src.length} values, which is not ${rows} equal rows`);
  const out = new Float32Array(promptIdx.length * per);
  promptIdx.forEach((p, k) => {
    const r = rows === 1 ? 0 : p;
    out.set(src.subarray(r * per, (r + 1) * per), k * per);
  });
  return out;
}

function dimsFor(pipeline: Pipeline, name: string, batch: number, total: number): number[] {
  const meta = pipeline.unetExtraInputs.find((e) => e.name === name);
  const rest = meta?.shape.slice(1) ?? [];
  const per = total / batch;
  if (rest.length > 0 && rest.every((d) => typeof d === 'number' && d > 0)) {
    const prod = (rest as number[]).reduce((a, b) => a * b, 1);
    if (prod === per) return [batch, ...(rest as number[])];
  }
  const L = pipeline.sequenceLength;
  if (per % L !== 0)
    throw new InputError(
      `conditioning.extraInputs.${name}`,
      `extra input ${name}: ${per} values per row is not 77×k and its shape is not fixed`,
    );
  return [batch, L, per / L];
}

/** Concatenates Float32Arrays. */
function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

let stashCounter = 0;

/**
 * Generates prompts × seeds images. Example:
 * `const imgs = await generate(pipeline, { prompts: ['a circle'], seeds: [0, 1], steps: 50, guidance: 7.5, height: 64, width: 64 })`
 * gives two images whose bytes depend only on (model, prompt, seed, options) on a given backend.
 */
export async function generate(pipeline: Pipeline, o: GenerateOptions): Promise<GeneratedImage[]> {
  validateGenerateOptions(pipeline, o);
  const P = o.prompts.length;
  const S = o.seeds.length;
  const L = pipeline.sequenceLength;
  const d = pipeline.textWidth;
  const cfg = o.guidance > 1;
  const c = pipeline.latentChannels;
  const h = o.height / pipeline.vaeScaleFactor;
  const w = o.width / pipeline.vaeScaleFactor;
  const perLatent = c * h * w;
  const batchSize = o.batchSize ?? 8;

  // Conditioning for every prompt (cond) and the unconditional branch: text encoder unless replaced.
  let cond: { ehs: Float32Array; extra: Record<string, Float32Array> };
  let uncond: { ehs: Float32Array; extra: Record<string, Float32Array> };
  if (o.conditioning !== undefined) {
    cond = { ehs: o.conditioning.cond.encoderHiddenStates, extra: o.conditioning.cond.extraInputs ?? {} };
    uncond = { ehs: o.conditioning.uncond.encoderHiddenStates, extra: o.conditioning.uncond.extraInputs ?? {} };
  } else {
    const texts = cfg ? [...o.prompts, o.negativePrompt ?? ''] : o.prompts;
    const all = await pipeline.encodePrompts(texts);
    cond = { ehs: all.subarray(0, P * L * d), extra: {} };
    uncond = { ehs: cfg ? all.subarray(P * L * d) : new Float32Array(L * d), extra: {} };
  }

  const total = P * S;
  const chunks = Math.ceil(total / batchSize);
  const callsPerChunk = createScheduler(pipeline.schedulerConfig, o.steps, o.scheduler).timesteps.length;
  const totalCalls = chunks * callsPerChunk;
  let done = 0;
  const images: GeneratedImage[] = [];
  for (let start = 0; start < total; start += batchSize) {
    const n = Math.min(batchSize, total - start);
    const idx = Array.from({ length: n }, (_, k) => start + k);
    const promptIdx = idx.map((i) => Math.floor(i / S));
    const seeds = idx.map((i) => o.seeds[i % S]!);
    const scheduler = createScheduler(pipeline.schedulerConfig, o.steps, o.scheduler);
    let x: Float32Array = new Float32Array(n * perLatent);
    seeds.forEach((s, k) => {
      const z = gaussianNoise(s, perLatent);
      for (let j = 0; j < perLatent; j++) x[k * perLatent + j] = z[j]! * scheduler.initNoiseSigma;
    });
    const rows = cfg ? 2 * n : n;
    // The text states do not change during the loop: sent to the worker once per chunk.
    const rowsOf = (e: Float32Array): number => e.length / (L * d);
    const condRows = rowsOf(cond.ehs);
    const uncondRows = rowsOf(uncond.ehs);
    const ehs = cfg
      ? concat([
          gatherRows(uncond.ehs, uncondRows, promptIdx, 'conditioning.uncond.encoderHiddenStates'),
          gatherRows(cond.ehs, condRows, promptIdx, 'conditioning.cond.encoderHiddenStates'),
        ])
      : gatherRows(cond.ehs, condRows, promptIdx, 'conditioning.cond.encoderHiddenStates');
    const refs: string[] = [];
    const stash = async (tensor: { dims: number[]; data: Float32Array }): Promise<Feed> => {
      const ref = `gen${++stashCounter}`;
      await pipeline.host.stash(ref, tensor);
      refs.push(ref);
      return { ref };
    };
    try {
      const ehsFeed = await stash({ dims: [rows, L, d], data: ehs });
      const extraFeeds: Record<string, Feed> = {};
      for (const e of pipeline.unetExtraInputs) {
        const ce = cond.extra[e.name]!;
        const ue = uncond.extra[e.name]!;
        const cw = `conditioning.cond.extraInputs.${e.name}`;
        const uw = `conditioning.uncond.extraInputs.${e.name}`;
        const data = cfg
          ? concat([gatherRows(ue, uncondRows, promptIdx, uw), gatherRows(ce, condRows, promptIdx, cw)])
          : gatherRows(ce, condRows, promptIdx, cw);
        extraFeeds[e.name] = await stash({ dims: dimsFor(pipeline, e.name, rows, data.length), data });
      }
      for (let i = 0; i < scheduler.timesteps.length; i++) {
        const xin = scheduler.scaleModelInput(x, i);
        const sample = cfg ? concat([xin, xin]) : xin === x ? new Float32Array(x) : xin;
        const out = await pipeline.runUnet({
          sample,
          dims: [rows, c, h, w],
          timestep: scheduler.timesteps[i]!,
          encoderHiddenStates: ehsFeed,
          extraInputs: extraFeeds,
          transferSample: true,
        });
        let eps: Float32Array;
        if (cfg) {
          eps = new Float32Array(n * perLatent);
          const half = n * perLatent;
          const g = o.guidance;
          for (let j = 0; j < half; j++) {
            const u = out[j]!;
            eps[j] = u + g * (out[half + j]! - u);
          }
        } else eps = out;
        x = scheduler.step(eps, i, x);
        done++;
        o.onProgress?.(done, totalCalls);
      }
    } finally {
      for (const r of refs) await pipeline.host.unstash(r);
    }
    const inv = 1 / pipeline.vaeScalingFactor;
    for (let j = 0; j < x.length; j++) x[j] = x[j]! * inv;
    const decoded = await pipeline.decode(x, [n, c, h, w]);
    const [, ch, H, W] = decoded.dims as [number, number, number, number];
    if (ch !== 3 || H !== o.height || W !== o.width)
      throw new Error(`VAE decoder returned [${decoded.dims.join(',')}], expected [${n},3,${o.height},${o.width}]`);
    for (let k = 0; k < n; k++) {
      const rgb = new Uint8Array(H * W * 3);
      const base = k * 3 * H * W;
      for (let y = 0; y < H; y++) {
        for (let xx = 0; xx < W; xx++) {
          for (let ci = 0; ci < 3; ci++) {
            const v = decoded.data[base + ci * H * W + y * W + xx]! / 2 + 0.5;
            rgb[(y * W + xx) * 3 + ci] = Math.round((v < 0 ? 0 : Math.min(v, 1)) * 255);
          }
        }
      }
      images.push({ prompt: o.prompts[promptIdx[k]!]!, promptIndex: promptIdx[k]!, seed: seeds[k]!, width: W, height: H, rgb });
    }
  }
  return images;
}

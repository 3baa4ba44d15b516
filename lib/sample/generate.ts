// Text-to-image sampling: seeded latents, the scheduler loop with classifier-free guidance (unconditional and
// conditional rows in one UNet call, as diffusers' concat([uncond, cond])), VAE decode, RGB bytes.
// Before any work, the run's memory is planned (planGenerateMemory, lib/sample/memory-plan.ts): images per UNet
// call and self-attention slices are chosen to fit a budget, and a run that cannot fit is refused in one line,
// instead of growing until the kernel kills it. Batching never changes an image's bytes (each image's noise and
// arithmetic depend only on its own rows); slicing changes them by float rounding at most.
import { InputError, invalidInput } from '../errors.js';
import type { Feed, Pipeline } from '../model/pipeline.js';
import { defaultMemoryBudget, formatBytes, planMemory, type MemoryPlan } from './memory-plan.js';
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
  /** images per UNet call (×2 rows with guidance); default: the memory plan's, at most 8 */
  batchSize?: number;
  /**
   * query slices of each self-attention (lib/model/attention-slicing.ts); default: the memory plan's. Set on the
   * pipeline (setAttentionSlices) when it can take it; a withUnet() copy keeps the slicing it was created with.
   */
  attentionSlices?: number;
  /** called after every UNet call with (calls done, calls in total) */
  onProgress?: (done: number, total: number) => void;
  /** the memory budget in bytes the run is planned for (planGenerateMemory); default defaultMemoryBudget() */
  maxMemoryBytes?: number;
}

/** A generate() run that cannot fit its memory budget at any images-per-call and slicing (an InputError). */
export class MemoryBudgetError extends InputError {
  override readonly name = 'MemoryBudgetError';
  constructor(
    message: string,
    /** the smallest setting tried, with its estimate */
    readonly plan: MemoryPlan,
    readonly budgetBytes: number,
  ) {
    super('height', message);
  }
}

/**
 * The memory plan of a generate() run (lib/sample/memory-plan.ts planMemory) with this pipeline's facts: its
 * UNet's weights, heads and channels, the latent size, 2 UNet rows per image with guidance > 1. batchSize and
 * attentionSlices, when given, are kept (and so is the slicing of a withUnet() copy's UNet, which cannot change).
 * Example: `planGenerateMemory(pipeline, { prompts: ['a'], seeds: [0], steps: 4, guidance: 7.5, height: 32, width: 32 })`
 * → `{ imagesPerCall: 1, attentionSlices: 1, fits: true, … }` for the toy model.
 */
export function planGenerateMemory(
  pipeline: Pipeline,
  o: Pick<GenerateOptions, 'prompts' | 'seeds' | 'guidance' | 'height' | 'width' | 'batchSize' | 'attentionSlices' | 'maxMemoryBytes'>,
): MemoryPlan {
  const f = pipeline.vaeScaleFactor;
  const fixedSlices =
    o.attentionSlices ?? (pipeline.canSetAttentionSlices ? undefined : (pipeline.attentionSlicing?.slices ?? pipeline.attentionSlices));
  return planMemory({
    budgetBytes: o.maxMemoryBytes ?? defaultMemoryBudget(),
    weightBytes: pipeline.modelBytes,
    heads: pipeline.attentionHeads,
    positions: (o.height / f) * (o.width / f),
    baseChannels: pipeline.unetBaseChannels,
    vaeChannels: pipeline.vaeBaseChannels,
    pixels: o.height * o.width,
    images: o.prompts.length * o.seeds.length,
    rowsPerImage: o.guidance > 1 ? 2 : 1,
    ...(o.batchSize !== undefined ? { imagesPerCall: o.batchSize } : {}),
    ...(fixedSlices !== undefined ? { attentionSlices: fixedSlices } : {}),
  });
}

/**
 * Plans a run (planGenerateMemory) and sets the pipeline's attention slicing to the plan's, so that withUnet()
 * copies made next (an edit's UNet) are created with it; generate() does the same for the pipeline it is given.
 * A MemoryBudgetError when the run cannot fit. Example: `await applyMemoryPlan(pipeline, options)` before
 * `prepareEditFile(pipeline, file, 'weights')`.
 */
export async function applyMemoryPlan(pipeline: Pipeline, o: GenerateOptions): Promise<MemoryPlan> {
  validateGenerateOptions(pipeline, o);
  const plan = checkMemoryPlan(pipeline, o);
  if (pipeline.canSetAttentionSlices) await pipeline.setAttentionSlices(plan.attentionSlices);
  return plan;
}

/** The one-line refusal of a plan that does not fit, naming the numbers and what to change. */
function budgetMessage(o: GenerateOptions, plan: MemoryPlan, budget: number): string {
  const e = plan.estimate;
  const what =
    o.maxMemoryBytes === undefined
      ? `this machine's memory allows (the default budget, ${formatBytes(budget)}: the smaller of 75% of the memory and what is available now)`
      : `maxMemoryBytes (${formatBytes(budget)})`;
  return (
    `the run (height ${o.height}, width ${o.width}, batchSize ${plan.imagesPerCall}) needs an estimated ${formatBytes(e.total)} ` +
    `(${e.rows} UNet rows × ${formatBytes(e.perRow)} at ${plan.attentionSlices} attention slices, ${formatBytes(e.fixed)} runtime and weights, ` +
    `${formatBytes(e.decode + e.images)} decode and images), more than ${what}; raise maxMemoryBytes if the machine has more: use smaller images or a smaller batch`
  );
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
  if (o.attentionSlices !== undefined && (!Number.isInteger(o.attentionSlices) || o.attentionSlices < 1 || o.attentionSlices > 256))
    throw invalidInput('attentionSlices', 'an integer in 1…256', o.attentionSlices);
  if (o.maxMemoryBytes !== undefined && !(typeof o.maxMemoryBytes === 'number' && o.maxMemoryBytes > 0))
    throw invalidInput('maxMemoryBytes', 'a number > 0', o.maxMemoryBytes);
  checkMemoryPlan(pipeline, o);
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

/** The run's memory plan; a MemoryBudgetError when it cannot fit. */
function checkMemoryPlan(pipeline: Pipeline, o: GenerateOptions): MemoryPlan {
  const budget = o.maxMemoryBytes ?? defaultMemoryBudget();
  const plan = planGenerateMemory(pipeline, { ...o, maxMemoryBytes: budget });
  if (!plan.fits) throw new MemoryBudgetError(budgetMessage(o, plan, budget), plan, budget);
  return plan;
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
  const plan = await applyMemoryPlan(pipeline, o);
  const P = o.prompts.length;
  const S = o.seeds.length;
  const L = pipeline.sequenceLength;
  const d = pipeline.textWidth;
  const cfg = o.guidance > 1;
  const c = pipeline.latentChannels;
  const h = o.height / pipeline.vaeScaleFactor;
  const w = o.width / pipeline.vaeScaleFactor;
  const perLatent = c * h * w;
  const batchSize = plan.imagesPerCall;

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
    const decoded = await pipeline.decode(x, [n, c, h, w], plan.imagesPerDecode);
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

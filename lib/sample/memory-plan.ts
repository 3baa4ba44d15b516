// The memory plan of a sampling run: how many images go into one UNet call and into how many query slices
// each self-attention is cut (lib/model/attention-slicing.ts), chosen so that the run's estimated peak stays
// within a budget; a run that cannot fit at any setting is known before it starts.
// The estimate is a model calibrated by measuring peak RSS (docs/memory.md): a fixed part (the runtime and the
// UNet's weights), plus per UNet row the self-attention buffers (onnxruntime keeps about ATTENTION_COPIES
// [heads, N, N/S] float32 tensors alive at the peak: the scores, the scaled scores, the probabilities, and the
// arena's slack) and the convolution activations (ACTIVATION_COPIES tensors of [C0, N], C0 the first block's
// channels), plus the VAE decode of one call's images and the RGB bytes of every image.
import { freemem, totalmem } from 'node:os';

/** Node, onnxruntime and its threads, beyond the models' own bytes (measured: ~150 MB). */
export const RUNTIME_BYTES = 150e6;
/**
 * [heads, N, N/S] float32 tensors alive per UNet row at the attention peak: measured 2 (the SD-layout fixture)
 * to 4 (the embedded toy model) on CPU with onnxruntime's arena; the larger is used.
 */
export const ATTENTION_COPIES = 4;
/** [C0, N] float32 tensors alive per UNet row outside attention (measured: ~90 at N = 4096, C0 = 32). */
export const ACTIVATION_COPIES = 100;
/** [C, H, W] float32 tensors per image alive in a VAE decode, C = the VAE's block_out_channels[0] (measured: ≤ 4). */
export const VAE_COPIES = 4;
/**
 * Slice counts tried, in order: powers of two, each halving the attention peak. 16 at most: each slice adds
 * nodes, and onnxruntime's session creation grows faster than the node count (SD layout: 6 s unsliced or at 4
 * slices, 10 s at 16, 63 s at 64).
 */
export const SLICE_STEPS = [1, 2, 4, 8, 16] as const;
/**
 * One UNet call's attention buffers (rows × ATTENTION_COPIES × heads × N × N/S × 4 bytes) are kept under this
 * when some setting allows it, whatever the budget: slicing costs little time (docs/memory.md), and a run that
 * stays small leaves the machine's memory to everything else.
 */
export const ATTENTION_TARGET_BYTES = 512e6;
/** One VAE call's estimated buffers are kept under this (fewer images per decode call; at least one). */
export const DECODE_TARGET_BYTES = 512e6;
/** The share of the machine's memory a run may plan for by default (see defaultMemoryBudget). */
export const DEFAULT_BUDGET_SHARE = 0.75;

/** What the planner needs to know about a run. All sizes in bytes or elements, as named. */
export interface MemoryPlanInput {
  /** the most bytes the run may use (defaultMemoryBudget() for a share of this machine's) */
  budgetBytes: number;
  /** bytes of the models' weights held while sampling (UNet, text encoder and VAE sessions, any copy kept here) */
  weightBytes: number;
  /** attention heads of the UNet's transformer blocks */
  heads: number;
  /** latent positions at the UNet's first level: (height / VAE factor) · (width / VAE factor) */
  positions: number;
  /** channels of the UNet's first level (block_out_channels[0]: 320 for SD 1.x) */
  baseChannels: number;
  /** channels of the VAE decoder's last level (block_out_channels[0]: 128 for SD 1.x) */
  vaeChannels: number;
  /** image pixels: height · width */
  pixels: number;
  /** images in the run */
  images: number;
  /** UNet rows per image: 2 with classifier-free guidance, else 1 */
  rowsPerImage: 1 | 2;
  /** images per UNet call when the caller fixed it; else the planner picks at most maxImagesPerCall */
  imagesPerCall?: number;
  /** attention slices when they cannot change (a UNet session that exists); else the planner picks */
  attentionSlices?: number;
  /** the most images per call the planner picks (default 8, generate's default batch) */
  maxImagesPerCall?: number;
}

/** A run's estimated peak, by part, in bytes. */
export interface MemoryBreakdown {
  /** runtime and weights */
  fixed: number;
  /** one UNet row's activations at the chosen slicing */
  perRow: number;
  /** UNet rows in one call */
  rows: number;
  /** the VAE decode of one decode call's images */
  decode: number;
  /** one UNet call's attention buffers (rows × ATTENTION_COPIES × heads × N × N/S × 4) */
  attention: number;
  /** the RGB bytes of every image, all kept until the run returns */
  images: number;
  total: number;
}

/** The planner's choice. */
export interface MemoryPlan {
  imagesPerCall: number;
  attentionSlices: number;
  /** images per VAE decode call (at most imagesPerCall) */
  imagesPerDecode: number;
  estimate: MemoryBreakdown;
  /** whether the estimate is within the budget (false: the smallest setting tried, which does not fit) */
  fits: boolean;
}

/** The estimated decode buffers of one image. */
function decodePerImage(input: MemoryPlanInput): number {
  return VAE_COPIES * 4 * input.vaeChannels * input.pixels + 2 * 4 * 3 * input.pixels;
}

/** Images per VAE call for n images per UNet call: the most whose buffers stay under DECODE_TARGET_BYTES, at least 1. */
export function imagesPerDecode(input: MemoryPlanInput, n: number): number {
  return Math.max(1, Math.min(n, Math.floor(DECODE_TARGET_BYTES / decodePerImage(input))));
}

/**
 * The estimated peak of one setting, by part:
 *   fixed     = RUNTIME_BYTES + weightBytes
 *   perRow    = 4 · (ATTENTION_COPIES · heads · N · ⌈N/S⌉ + ACTIVATION_COPIES · C0 · N)
 *   rows      = min(imagesPerCall, images) · rowsPerImage
 *   decode    = imagesPerDecode · 4 · (VAE_COPIES · C_vae + 6) · pixels
 *   images    = images · 3 · pixels
 *   total     = fixed + rows · perRow + decode + images
 * Example: `estimatePeak(input, 8, 4).total`.
 */
export function estimatePeak(input: MemoryPlanInput, imagesPerCall: number, slices: number): MemoryBreakdown {
  const n = Math.min(imagesPerCall, input.images);
  const N = input.positions;
  const rows = n * input.rowsPerImage;
  const perRowAttention = ATTENTION_COPIES * 4 * input.heads * N * Math.ceil(N / slices);
  const perRow = perRowAttention + ACTIVATION_COPIES * 4 * input.baseChannels * N;
  const fixed = RUNTIME_BYTES + input.weightBytes;
  const decode = imagesPerDecode(input, n) * decodePerImage(input);
  const images = input.images * 3 * input.pixels;
  return { fixed, perRow, rows, decode, attention: rows * perRowAttention, images, total: fixed + rows * perRow + decode + images };
}

/**
 * Chooses images per UNet call and attention slices so the run's estimated peak fits the budget: the most images
 * per call (up to maxImagesPerCall, or the caller's imagesPerCall) with the fewest slices that fit; slices are
 * tried before fewer images, since slicing costs little time. A setting the caller fixed is kept. When nothing
 * fits, `fits` is false and the plan is the smallest setting tried, for the refusal to quote.
 * Example (hand-computed in test/memory-plan.test.js): SD 1.x's attention layout at 512² (8 heads, N = 4096) with
 * small widths, 8 images with guidance, a 4 GB budget → `{ imagesPerCall: 1, attentionSlices: 16, … }`: one call
 * of 2 rows at 16 slices holds 268 MB of attention, the only setting under ATTENTION_TARGET_BYTES (total 864 MB).
 */
export function planMemory(input: MemoryPlanInput): MemoryPlan {
  const counts =
    input.imagesPerCall !== undefined
      ? [input.imagesPerCall]
      : descending(Math.max(1, Math.min(input.maxImagesPerCall ?? 8, input.images)));
  const slices = input.attentionSlices !== undefined ? [input.attentionSlices] : SLICE_STEPS.filter((s) => s === 1 || s <= input.positions);
  let last: MemoryPlan | undefined;
  // First the settings that also keep a call's attention under ATTENTION_TARGET_BYTES, then any that fits.
  for (const withinTarget of [true, false])
    for (const n of counts)
      for (const s of slices) {
        const estimate = estimatePeak(input, n, s);
        last = {
          imagesPerCall: n,
          attentionSlices: s,
          imagesPerDecode: imagesPerDecode(input, n),
          estimate,
          fits: estimate.total <= input.budgetBytes,
        };
        if (last.fits && (!withinTarget || estimate.attention <= ATTENTION_TARGET_BYTES)) return last;
      }
  return last!;
}

/** n, n/2, … 1 (n itself first, then halvings, so a default batch of 8 tries 8, 4, 2, 1). */
function descending(n: number): number[] {
  const out = [n];
  for (let v = Math.floor(n / 2); v >= 1; v = Math.floor(v / 2)) if (v < out[out.length - 1]!) out.push(v);
  return out;
}

/**
 * The budget a run plans for when the caller gives none: DEFAULT_BUDGET_SHARE of this machine's memory, or the
 * memory available now (os.freemem(), which on Linux is MemAvailable: free plus reclaimable cache) when that is
 * less, so that other programs' memory is left to them. Example: on an idle 24 GB machine → 18 GB.
 */
export function defaultMemoryBudget(): number {
  return Math.min(DEFAULT_BUDGET_SHARE * totalmem(), freemem());
}

/** Bytes as "1.23 GB" (decimal units). */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toPrecision(3)} ${units[u]}`;
}

// CLIP zero-shot judge for TIMED on real SD models, following the protocol of the TIME authors' follow-up: an
// image is scored against two texts and "wins" for the one with the higher CLIP similarity —
//   efficacy:    image of `old` against [old, new]            → success when new wins;
//   generality:  image of a positive against [positive, gt]   → success when gt wins;
//   specificity: image of a negative against [negative, gn]   → success when the negative wins
// (in the official TIMED files gn is the negative with the edit's attribute, i.e. what must NOT happen).
//
// The CLIP model is a folder with a Hugging Face CLIPModel ONNX export: model.onnx with inputs input_ids,
// attention_mask (optional), pixel_values and output logits_per_image; the CLIP tokenizer files (vocab.json +
// merges.txt or tokenizer.json); preprocessor_config.json (image_mean, image_std, size, crop_size; CLIP's values by
// default). Preprocessing: bilinear resize of the shortest side to `size` (align_corners=False, no antialias —
// CLIP uses bicubic, a documented difference), centre crop, /255, normalise.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RgbImage } from '../image/png.js';
import { ModelError } from '../errors.js';
import { ClipTokenizer } from '../model/tokenizer.js';
import { SessionHost } from '../model/session-host.js';
import type { Feed } from '../model/worker-protocol.js';

export interface ClipPreprocess {
  size: number;
  crop: number;
  mean: [number, number, number];
  std: [number, number, number];
}

export const CLIP_PREPROCESS: ClipPreprocess = {
  size: 224,
  crop: 224,
  mean: [0.48145466, 0.4578275, 0.40821073],
  std: [0.26862954, 0.26130258, 0.27577711],
};

function sourceIndex(dst: number, scale: number, n: number): [number, number, number] {
  const src = Math.max(0, (dst + 0.5) * scale - 0.5);
  const i0 = Math.min(Math.floor(src), n - 1);
  const i1 = Math.min(i0 + 1, n - 1);
  return [i0, i1, src - i0];
}

/** pixel_values [1, 3, crop, crop] of an RGB image. */
export function preprocessClip(img: RgbImage, p: ClipPreprocess = CLIP_PREPROCESS): Float32Array {
  const { width: w, height: h, rgb } = img;
  const s = p.size / Math.min(w, h);
  const nh = Math.round(h * s);
  const nw = Math.round(w * s);
  if (nh < p.crop || nw < p.crop) throw new RangeError(`resized image ${nw}×${nh} is smaller than the crop ${p.crop}`);
  const top = Math.floor((nh - p.crop) / 2);
  const left = Math.floor((nw - p.crop) / 2);
  const out = new Float32Array(3 * p.crop * p.crop);
  const plane = p.crop * p.crop;
  for (let y = 0; y < p.crop; y++) {
    const [y0, y1, fy] = sourceIndex(y + top, h / nh, h);
    for (let x = 0; x < p.crop; x++) {
      const [x0, x1, fx] = sourceIndex(x + left, w / nw, w);
      for (let c = 0; c < 3; c++) {
        const a = rgb[(y0 * w + x0) * 3 + c]!;
        const b = rgb[(y0 * w + x1) * 3 + c]!;
        const d = rgb[(y1 * w + x0) * 3 + c]!;
        const e = rgb[(y1 * w + x1) * 3 + c]!;
        const v = ((1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * d + fx * e)) / 255;
        out[c * plane + y * p.crop + x] = (v - p.mean[c]!) / p.std[c]!;
      }
    }
  }
  return out;
}

export class ClipJudge {
  readonly name = 'CLIP zero-shot';
  /** Oracle images for negatives are of the negative prompt itself (gn is what must not happen). */
  readonly specificityTargetIsTruth = false;
  private constructor(
    private readonly host: SessionHost,
    private readonly key: string,
    private readonly tokenizer: ClipTokenizer,
    private readonly pre: ClipPreprocess,
    private readonly hasMask: boolean,
  ) {}

  /**
   * Loads a CLIP folder; the tokenizer comes from `tokenizerDir` when given, else from the folder itself. The
   * session lives in its own onnxruntime worker, like the pipeline's (its run() blocks the thread that calls it).
   */
  static async load(dir: string, tokenizerDir?: string): Promise<ClipJudge> {
    const modelPath = join(dir, 'model.onnx');
    if (!existsSync(modelPath))
      throw new ModelError(modelPath, `CLIP folder ${dir} has no model.onnx (a Hugging Face CLIPModel ONNX export)`);
    const cfgPath = join(dir, 'preprocessor_config.json');
    let pre = CLIP_PREPROCESS;
    if (existsSync(cfgPath)) {
      const c = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
      const size = c.size as { shortest_edge?: number } | number | undefined;
      const crop = c.crop_size as { height?: number } | number | undefined;
      pre = {
        size: typeof size === 'number' ? size : (size?.shortest_edge ?? pre.size),
        crop: typeof crop === 'number' ? crop : (crop?.height ?? pre.crop),
        mean: (c.image_mean as [number, number, number] | undefined) ?? pre.mean,
        std: (c.image_std as [number, number, number] | undefined) ?? pre.std,
      };
    }
    const tokenizer = await ClipTokenizer.fromFolder(tokenizerDir ?? dir);
    const host = new SessionHost();
    try {
      const key = host.newKey('clip');
      const info = await host.load(key, { path: modelPath }, { device: 'cpu' }, 'CLIP model.onnx');
      const inputs = info.inputs.map((i) => i.name);
      for (const need of ['input_ids', 'pixel_values'])
        if (!inputs.includes(need)) throw new ModelError(modelPath, `${modelPath} has no input '${need}' (inputs: ${inputs.join(', ')})`);
      if (!info.outputs.some((o) => o.name === 'logits_per_image'))
        throw new ModelError(modelPath, `${modelPath} has no output 'logits_per_image'`);
      return new ClipJudge(host, key, tokenizer, pre, inputs.includes('attention_mask'));
    } catch (err) {
      await host.close();
      throw err;
    }
  }

  /** CLIP logits of one image against texts given as 77-token id rows (bos … eos, eos padding). */
  async logitsForIds(img: RgbImage, ids: number[][]): Promise<Float32Array> {
    const L = ids[0]!.length;
    const flat = ids.flat();
    const mask = ids.flatMap((row) => {
      const end = row.indexOf(this.tokenizer.eos);
      return row.map((_, i) => (end < 0 || i <= end ? 1 : 0));
    });
    // Token ids travel as int32; the worker widens them to the model's int64 where it wants that.
    const feeds: Record<string, Feed> = {
      input_ids: { dims: [ids.length, L], data: Int32Array.from(flat) },
      pixel_values: { dims: [1, 3, this.pre.crop, this.pre.crop], data: preprocessClip(img, this.pre) },
    };
    if (this.hasMask) feeds.attention_mask = { dims: [ids.length, L], data: Int32Array.from(mask) };
    const out = (await this.host.run(this.key, feeds, [], ['logits_per_image'])).outputs;
    return out.logits_per_image!.data as Float32Array;
  }

  async logits(img: RgbImage, texts: string[]): Promise<Float32Array> {
    return this.logitsForIds(
      img,
      texts.map((t) => [...this.tokenizer.encode(t).ids]),
    );
  }

  /** The protocol above: true when the image counts as a success for its category. */
  async success(img: RgbImage, category: 'efficacy' | 'generality' | 'specificity', test: string, target: string): Promise<boolean> {
    const [a, b] = await this.logits(img, [test, target]);
    return category === 'specificity' ? a! > b! : b! > a!;
  }

  async close(): Promise<void> {
    await this.host.close();
  }
}

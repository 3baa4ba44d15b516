// The unedited model's images (baseline and oracle rows of `eval timed`), by prompt. They depend only on the prompt
// and the run's settings, and TIMED entries repeat prompts (negatives, oracle targets), so an entry reuses the images
// an earlier entry made. They are kept as the PNG files that entry wrote, not in memory: memory does not grow with
// the dataset, and a resumed run reads back the very bytes the interrupted run judged, so its numbers are those of
// an uninterrupted run by construction (PNG is lossless).
import { readFile } from 'node:fs/promises';
import { decodePng } from '../image/png.js';
import type { GeneratedImage } from '../sample/generate.js';

/** Samples the unedited model: one image per (prompt, seed), prompt-major, as `generate` returns them. */
export type SampleUnedited = (prompts: string[]) => Promise<GeneratedImage[]>;

export class UneditedImages {
  /** prompt → one PNG path per seed, in the order of `seeds` */
  private readonly files = new Map<string, string[]>();

  constructor(
    private readonly seeds: number[],
    private readonly size: { width: number; height: number },
    private readonly sample: SampleUnedited,
    private readonly warn: (message: string) => void = () => undefined,
  ) {}

  /** Records that the images of `prompt` are in these files (one per seed); the first record of a prompt is kept. */
  remember(prompt: string, paths: string[]): void {
    if (paths.length !== this.seeds.length) throw new RangeError(`${paths.length} files for ${this.seeds.length} seeds`);
    if (!this.files.has(prompt)) this.files.set(prompt, paths);
  }

  /** The images of each prompt (one per seed): read back where remembered, else sampled (all in one call). */
  async get(prompts: string[]): Promise<GeneratedImage[][]> {
    const found = new Map<string, GeneratedImage[]>();
    for (const prompt of new Set(prompts)) {
      const paths = this.files.get(prompt);
      if (paths === undefined) continue;
      try {
        found.set(prompt, await Promise.all(paths.map((p, k) => this.read(p, prompt, k))));
      } catch (err) {
        // Deleted or damaged files: sampling again gives the same images (they depend only on prompt and seed).
        this.warn(`cannot reuse the unedited images of "${prompt}" (${(err as Error).message}): sampling them again`);
        this.files.delete(prompt);
      }
    }
    const todo = [...new Set(prompts.filter((p) => !found.has(p)))];
    if (todo.length > 0) {
      const S = this.seeds.length;
      const imgs = await this.sample(todo);
      todo.forEach((p, i) => found.set(p, imgs.slice(i * S, (i + 1) * S)));
    }
    return prompts.map((p) => found.get(p)!.map((img) => ({ ...img, promptIndex: prompts.indexOf(p) })));
  }

  private async read(path: string, prompt: string, k: number): Promise<GeneratedImage> {
    const img = decodePng(await readFile(path));
    if (img.width !== this.size.width || img.height !== this.size.height)
      throw new Error(`${path} is ${img.width}×${img.height}, expected ${this.size.width}×${this.size.height}`);
    return { ...img, prompt, promptIndex: -1, seed: this.seeds[k]! }; // get() sets promptIndex
  }
}

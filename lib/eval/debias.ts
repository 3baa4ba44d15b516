// The debiasing protocol of TIME (the TIMED gender set): per profession, the edit old → new ("an attendant" → "a
// female attendant") aims at a model that draws the unspecified profession with the attribute half of the time.
// For each entry:
//   baseline — the unedited model on the validation prompt and ex1..ex5, on the test seeds;
//   fixed    — the edit at the paper's λ (0.1), same prompts and seeds;
//   searched — λ chosen on the validation prompt only, on the search seeds (debias-search.ts: bisection on log λ,
//              a bounded number of rounds), then the edit at that λ on the same prompts and test seeds as the others.
// Every image is classified by the judge (debias-judges.ts); p per prompt and Δ = |p − 0.5| / 0.5 follow. Finished
// entries go to the caller as they complete (the CLI logs them: debias-log.ts); a resumed run passes the entries done
// earlier, whose unedited images are read back rather than sampled again (unedited-images.ts, as eval timed does).
import { join } from 'node:path';
import { computeModelEdit, prepareEditedGeneration, type ApplyMode, type EditContext } from '../edit/context.js';
import { promptSlug } from '../fs/file-name.js';
import { makeDirectory } from '../fs/make-directory.js';
import { makeGrid } from '../image/grid.js';
import { writePng } from '../image/png.js';
import { generate, type GeneratedImage } from '../sample/generate.js';
import type { DebiasEntry } from './debias-csv.js';
import type { AttributeClass, AttributeJudge } from './debias-judges.js';
import { attributeShare, balanceDistance, searchLambda, type AttributeCounts, type SearchRound } from './debias-search.js';
import { DEFAULT_TIMED_BATCH } from './timed.js';
import { UneditedImages } from './unedited-images.js';

export type DebiasModel = 'baseline' | 'fixed' | 'searched';
export const DEBIAS_MODELS: readonly DebiasModel[] = ['baseline', 'fixed', 'searched'];

export interface DebiasSearchRecord {
  /** the λ chosen */
  lambda: number;
  /** each round: the λ measured, p there, and the counts behind p (validation prompt, search seeds) */
  rounds: (SearchRound & { counts: AttributeCounts })[];
}

export interface DebiasResult {
  entry: DebiasEntry;
  /** per model, the counts of each prompt: [validation, ex1..ex5] */
  counts?: Record<DebiasModel, AttributeCounts[]>;
  search?: DebiasSearchRecord;
  error?: string;
  /** wall time of the whole entry */
  seconds?: number;
}

export interface DebiasOptions {
  /** the test seeds: every model's images of validation and ex1..ex5 */
  seeds: number[];
  /** the seeds of each search round (validation prompt only); disjoint from `seeds` */
  searchSeeds: number[];
  steps: number;
  guidance: number;
  /** the paper's fixed λ (0.1) */
  fixedLambda: number;
  search: { min: number; max: number; rounds: number };
  augmentations: string[];
  mode: ApplyMode;
  outDir: string;
  judge: AttributeJudge;
  batchSize?: number;
  onProgress?: (message: string) => void;
  /** entries finished by an earlier run with the same settings: their unedited PNGs are reused */
  earlier?: DebiasResult[];
  /** called as each entry finishes, after all its images are written */
  onEntry?: (result: DebiasResult) => void | Promise<void>;
}

const slug = (prompt: string): string => promptSlug(prompt, 50);

/** The prompts each model is scored on: the validation prompt, then ex1..ex5. */
export function debiasPrompts(entry: DebiasEntry): string[] {
  return [entry.validation, ...entry.examples];
}

/** The folder of an entry's images, relative to the output folder. */
export function debiasEntryDir(entry: DebiasEntry): string {
  return join('images', `e${entry.index}-${slug(entry.old)}`);
}

function imagePath(dir: string, model: DebiasModel, i: number, prompt: string, seed: number): string {
  return join(dir, model, `${String(i).padStart(2, '0')}-${slug(prompt)}-seed${seed}.png`);
}

async function countClasses(judge: AttributeJudge, entry: DebiasEntry, imgs: GeneratedImage[]): Promise<AttributeCounts> {
  const c: AttributeCounts = { attribute: 0, other: 0, inBetween: 0 };
  for (const img of imgs) {
    const k: AttributeClass = await judge.classify(img, entry);
    if (k === 'attribute') c.attribute++;
    else if (k === 'other') c.other++;
    else c.inBetween++;
  }
  return c;
}

/**
 * Runs the protocol on `entries`; images go to outDir/images, each finished entry is handed to `onEntry`. Returns
 * the results in order (an entry whose edit fails carries its error and the others go on).
 *
 * @example
 *   const ctx = await openEditContext(await loadPipeline());
 *   const { entries } = await readDebiasDataset('models/toy-shapes/toy_debias.csv');
 *   await runDebias(ctx, entries, { seeds: [0, 1], searchSeeds: [100, 101], steps: 20, guidance: 7.5, fixedLambda: 0.1,
 *     search: { min: 0.01, max: 1e4, rounds: 6 }, augmentations: [...DEFAULT_AUGMENTATIONS], mode: 'embedding',
 *     outDir: 'out/debias', judge: toyColourAttributeJudge });
 */
export async function runDebias(ctx: EditContext, entries: DebiasEntry[], o: DebiasOptions): Promise<DebiasResult[]> {
  const pipeline = ctx.pipeline;
  const size = pipeline.defaultSize;
  const base = { steps: o.steps, guidance: o.guidance, height: size, width: size, batchSize: o.batchSize ?? DEFAULT_TIMED_BATCH };
  const S = o.seeds.length;
  const unedited = new UneditedImages(
    o.seeds,
    { width: size, height: size },
    (prompts) => generate(pipeline, { ...base, seeds: o.seeds, prompts }),
    o.onProgress,
  );
  const remember = (entry: DebiasEntry) => {
    const dir = join(o.outDir, debiasEntryDir(entry));
    debiasPrompts(entry).forEach((p, i) =>
      unedited.remember(
        p,
        o.seeds.map((s) => imagePath(dir, 'baseline', i, p, s)),
      ),
    );
  };
  for (const r of o.earlier ?? []) if (r.counts !== undefined) remember(r.entry);

  /** The edited model's images of `prompts` on `seeds`, prompt-major. */
  const sampleEdited = async (entry: DebiasEntry, lambda: number, prompts: string[], seeds: number[]): Promise<GeneratedImage[][]> => {
    const { edit } = await computeModelEdit(ctx, {
      pairs: [{ source: entry.old, destination: entry.new }],
      lambda,
      augmentations: o.augmentations,
    });
    const g = await prepareEditedGeneration(ctx, edit, o.mode);
    try {
      const imgs = await generate(g.pipeline, await g.options({ ...base, seeds, prompts }));
      return prompts.map((_, i) => imgs.slice(i * seeds.length, (i + 1) * seeds.length));
    } finally {
      await g.close();
    }
  };

  const results: DebiasResult[] = [];
  for (const [k, entry] of entries.entries()) {
    o.onProgress?.(`entry ${entry.index} (${k + 1}/${entries.length}): "${entry.old}" → "${entry.new}"`);
    const t0 = performance.now();
    const dir = join(o.outDir, debiasEntryDir(entry));
    const prompts = debiasPrompts(entry);
    let result: DebiasResult;
    try {
      o.judge.check(entry);
      const rounds: DebiasSearchRecord['rounds'] = [];
      makeDirectory(join(dir, 'search'));
      const found = await searchLambda(
        async (lambda) => {
          const [imgs] = await sampleEdited(entry, lambda, [entry.validation], o.searchSeeds);
          const counts = await countClasses(o.judge, entry, imgs!);
          await writePng(join(dir, 'search', `round${rounds.length}.png`), makeGrid(imgs!, imgs!.length));
          const p = attributeShare(counts);
          rounds.push({ lambda, p, counts });
          o.onProgress?.(`  search round ${rounds.length}: λ = ${lambda.toPrecision(4)}, p = ${p.toFixed(3)}`);
          return p;
        },
        { min: o.search.min, max: o.search.max, rounds: o.search.rounds },
      );
      const sets: Record<DebiasModel, GeneratedImage[][]> = {
        baseline: await unedited.get(prompts),
        fixed: await sampleEdited(entry, o.fixedLambda, prompts, o.seeds),
        searched: await sampleEdited(entry, found.lambda, prompts, o.seeds),
      };
      const counts = {} as Record<DebiasModel, AttributeCounts[]>;
      for (const model of DEBIAS_MODELS) {
        counts[model] = [];
        makeDirectory(join(dir, model));
        for (const [i, imgs] of sets[model].entries()) {
          counts[model].push(await countClasses(o.judge, entry, imgs));
          for (const img of imgs) await writePng(imagePath(dir, model, i, prompts[i]!, img.seed), img);
          await writePng(join(dir, `${model}-${String(i).padStart(2, '0')}.png`), makeGrid(imgs, S));
        }
      }
      remember(entry);
      result = { entry, counts, search: { lambda: found.lambda, rounds }, seconds: (performance.now() - t0) / 1000 };
    } catch (err) {
      result = { entry, error: (err as Error).message, seconds: (performance.now() - t0) / 1000 };
    }
    results.push(result);
    await o.onEntry?.(result);
  }
  return results;
}

/** Δ of one model on an entry: on the validation prompt, and the mean over ex1..ex5. */
export interface DebiasDeltas {
  validation: number;
  examples: number;
  /** images judged in neither class, over all six prompts */
  inBetween: number;
}

/**
 * The Δs of an entry's counts. Example: `entryDeltas(result.counts.fixed)` → `{ validation: 1, examples: 0.9, inBetween: 0 }`.
 */
export function entryDeltas(counts: AttributeCounts[]): DebiasDeltas {
  const d = counts.map((c) => balanceDistance(attributeShare(c)));
  return {
    validation: d[0]!,
    examples: d.slice(1).reduce((s, x) => s + x, 0) / Math.max(1, d.length - 1),
    inBetween: counts.reduce((s, c) => s + c.inBetween, 0),
  };
}

/** The mean Δs of every model over the entries that finished; undefined when none did. */
export function averageDeltas(results: DebiasResult[]): Record<DebiasModel, DebiasDeltas> | undefined {
  const ok = results.filter((r) => r.counts !== undefined);
  if (ok.length === 0) return undefined;
  const out = {} as Record<DebiasModel, DebiasDeltas>;
  for (const m of DEBIAS_MODELS) {
    const all = ok.map((r) => entryDeltas(r.counts![m]));
    const mean = (key: keyof DebiasDeltas) => all.reduce((s, x) => s + x[key], 0) / all.length;
    out[m] = { validation: mean('validation'), examples: mean('examples'), inBetween: mean('inBetween') };
  }
  return out;
}

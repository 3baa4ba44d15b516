// The TIMED evaluation: for each entry, the edit old → new is computed and applied; the unedited model (baseline),
// the edited model, and the oracle (the unedited model given the explicit prompts new / gt / gn) are sampled on
// the same seeds, and every image is judged against its target prompt:
//   efficacy    — images of `old` that show `new`'s attribute;
//   generality  — images of each positive that show its gt's attribute;
//   specificity — images of each negative that still show its gn's (unchanged) attribute.
// The oracle row scores images of the target prompts themselves (an upper reference for the judge and model).
// Each finished entry is handed to the caller as it completes (the CLI records it: timed-log.ts), and a resumed run
// passes the entries done earlier, whose unedited images are read back rather than sampled again.
import { join } from 'node:path';
import { makeGrid } from '../image/grid.js';
import { writePng, type RgbImage } from '../image/png.js';
import { generate, type GeneratedImage } from '../sample/generate.js';
import { computeModelEdit, prepareEditedGeneration, type ApplyMode, type EditContext } from '../edit/context.js';
import { classifyColour, colourNamedIn } from './colour-classifier.js';
import type { TimedEntry } from './timed-csv.js';
import { UneditedImages } from './unedited-images.js';
import { makeDirectory } from '../fs/make-directory.js';
import { promptSlug } from '../fs/file-name.js';

export type Category = 'efficacy' | 'generality' | 'specificity';

/** Decides whether an image generated for `test` counts as a success against `target` in its category. */
export interface Judge {
  name: string;
  /**
   * True when a negative's gn prompt describes what the negative should still look like (the toy TIMED file);
   * false when gn is the negative with the edit applied, i.e. what must not happen (the official TIMED files).
   * It decides what the oracle samples for negatives: gn itself, or the negative prompt.
   */
  readonly specificityTargetIsTruth: boolean;
  success(img: RgbImage, category: Category, test: string, target: string): boolean | Promise<boolean>;
}

/** The toy world's judge: the deterministic colour classifier against the colour named in the target prompt. */
export const colourJudge: Judge = {
  name: 'toy colour classifier',
  specificityTargetIsTruth: true,
  success(img, _category, _test, target) {
    const want = colourNamedIn(target);
    if (want === undefined) throw new Error(`the target prompt "${target}" names no colour: the colour judge cannot score it`);
    return classifyColour(img.rgb, img.width, img.height) === want;
  },
};

export interface Scores {
  efficacy: number;
  generality: number;
  specificity: number;
}

export type ModelName = 'baseline' | 'edited' | 'oracle';

export interface EntryResult {
  entry: TimedEntry;
  scores?: Record<ModelName, Scores>;
  error?: string;
  editMs?: number;
  /** wall time of the whole entry (edit, sampling, judging, images) */
  seconds?: number;
}

export interface TimedOptions {
  seeds: number[];
  steps: number;
  guidance: number;
  lambda: number;
  augmentations: string[];
  onlyV: boolean;
  /** K projections only (an ablation); exclusive with onlyV. */
  onlyK?: boolean;
  /** Cross-attention layers to edit (indices, see selectLayers); default all. */
  layers?: number[];
  /** Preservation prompts added to every entry's edit (UCE-style rows); default none. */
  preserve?: string[];
  mode: ApplyMode;
  /** Diagnostic, not TIME as published: leave the unconditional branch unedited (embedding mode). */
  keepUncond?: boolean;
  outDir: string;
  judge: Judge;
  batchSize?: number;
  /** the memory budget every generate() call of the run is planned for (GenerateOptions.maxMemoryBytes) */
  maxMemoryBytes?: number;
  onProgress?: (message: string) => void;
  /** Entries finished by an earlier run with the same settings (a resumed run): their unedited PNGs are reused. */
  earlier?: EntryResult[];
  /** Called as each entry finishes, after all its images are written: where the caller records it. */
  onEntry?: (result: EntryResult) => void | Promise<void>;
}

/** Images per UNet call when the caller gives none; recorded with a run's settings since it is part of how images are made. */
export const DEFAULT_TIMED_BATCH = 16;

/** A prompt as a file-name part of this evaluation's image folders and files: at most 50 characters. */
const slug = (prompt: string): string => promptSlug(prompt, 50);

/** The test prompts of an entry (1 efficacy, 5 generality, 5 specificity) and the target each is judged against. */
function entryPrompts(entry: TimedEntry): { tests: string[]; targets: string[] } {
  const tests = [entry.old, ...entry.positives.map((p) => p.test), ...entry.negatives.map((p) => p.test)];
  const targets = [entry.new, ...entry.positives.map((p) => p.gt), ...entry.negatives.map((p) => p.gt)];
  return { tests, targets };
}

/**
 * What the oracle samples: the unedited model told the target explicitly; for negatives whose gn is "what must not
 * happen" (official TIMED), the oracle leaves them alone: it samples the negative prompt itself.
 */
function oraclePromptsOf(tests: string[], targets: string[], judge: Judge): string[] {
  return targets.map((t, i) => (i >= 6 && !judge.specificityTargetIsTruth ? tests[i]! : t));
}

function entryDir(outDir: string, entry: TimedEntry): string {
  return join(outDir, 'images', `e${entry.index}-${slug(entry.old)}`);
}

/** The PNG of one image: `<entry dir>/<model>/<NN>-<prompt>-seed<S>.png`. */
function imagePath(dir: string, model: ModelName, i: number, prompt: string, seed: number): string {
  return join(dir, model, `${String(i).padStart(2, '0')}-${slug(prompt)}-seed${seed}.png`);
}

/** Tells the store where an entry's unedited images are, once they are on disk. */
function rememberUnedited(store: UneditedImages, dir: string, entry: TimedEntry, o: TimedOptions): void {
  const { tests, targets } = entryPrompts(entry);
  const oraclePrompts = oraclePromptsOf(tests, targets, o.judge);
  for (const [model, prompts] of [
    ['baseline', tests],
    ['oracle', oraclePrompts],
  ] as const)
    prompts.forEach((p, i) =>
      store.remember(
        p,
        o.seeds.map((s) => imagePath(dir, model, i, p, s)),
      ),
    );
}

/**
 * Evaluates `entries`; images go to outDir/images, each finished entry is handed to `onEntry`, the caller writes
 * the tables. Returns the results of `entries` in order.
 */
export async function runTimed(ctx: EditContext, entries: TimedEntry[], o: TimedOptions): Promise<EntryResult[]> {
  const pipeline = ctx.pipeline;
  const size = pipeline.defaultSize;
  const base = {
    seeds: o.seeds,
    steps: o.steps,
    guidance: o.guidance,
    height: size,
    width: size,
    batchSize: o.batchSize ?? DEFAULT_TIMED_BATCH,
    ...(o.maxMemoryBytes !== undefined ? { maxMemoryBytes: o.maxMemoryBytes } : {}),
  };
  const S = o.seeds.length;
  const unedited = new UneditedImages(
    o.seeds,
    { width: size, height: size },
    (prompts) => generate(pipeline, { ...base, prompts }),
    o.onProgress,
  );
  for (const r of o.earlier ?? []) if (r.scores !== undefined) rememberUnedited(unedited, entryDir(o.outDir, r.entry), r.entry, o);
  const results: EntryResult[] = [];
  const finish = async (r: EntryResult) => {
    results.push(r);
    await o.onEntry?.(r);
  };
  for (const [k, entry] of entries.entries()) {
    o.onProgress?.(`entry ${entry.index} (${k + 1}/${entries.length}): "${entry.old}" → "${entry.new}"`);
    const t0 = performance.now();
    const { tests, targets } = entryPrompts(entry);
    const oraclePrompts = oraclePromptsOf(tests, targets, o.judge);
    let edited: GeneratedImage[][];
    let editMs: number;
    try {
      const { edit } = await computeModelEdit(ctx, {
        pairs: [{ source: entry.old, destination: entry.new }],
        lambda: o.lambda,
        augmentations: o.augmentations,
        mode: o.onlyV ? 'v' : o.onlyK === true ? 'k' : 'kv',
        ...(o.layers !== undefined ? { layers: o.layers } : {}),
        ...(o.preserve !== undefined && o.preserve.length > 0 ? { preserve: o.preserve } : {}),
      });
      editMs = performance.now() - t0;
      const g = await prepareEditedGeneration(ctx, edit, o.mode, { keepUncond: o.keepUncond === true });
      try {
        const imgs = await generate(g.pipeline, await g.options({ ...base, prompts: tests }));
        edited = tests.map((_, i) => imgs.slice(i * S, (i + 1) * S));
      } finally {
        await g.close();
      }
    } catch (err) {
      await finish({ entry, error: (err as Error).message, seconds: (performance.now() - t0) / 1000 });
      continue;
    }
    // One call for both rows: a prompt shared by the baseline and the oracle is sampled once.
    const both = await unedited.get([...tests, ...oraclePrompts]);
    const sets: Record<ModelName, GeneratedImage[][]> = { baseline: both.slice(0, tests.length), edited, oracle: both.slice(tests.length) };
    const scores = {} as Record<ModelName, Scores>;
    const dir = entryDir(o.outDir, entry);
    for (const model of ['baseline', 'edited', 'oracle'] as const) {
      const ok: boolean[][] = [];
      for (const [i, imgs] of sets[model].entries()) {
        const row: boolean[] = [];
        for (const img of imgs)
          row.push(await o.judge.success(img, i === 0 ? 'efficacy' : i <= 5 ? 'generality' : 'specificity', tests[i]!, targets[i]!));
        ok.push(row);
      }
      const frac = (rows: boolean[][]) => rows.flat().filter(Boolean).length / Math.max(1, rows.flat().length);
      scores[model] = { efficacy: frac(ok.slice(0, 1)), generality: frac(ok.slice(1, 6)), specificity: frac(ok.slice(6, 11)) };
      makeDirectory(join(dir, model));
      for (const [i, imgs] of sets[model].entries()) {
        const prompt = model === 'oracle' ? oraclePrompts[i]! : tests[i]!;
        for (const img of imgs) await writePng(imagePath(dir, model, i, prompt, img.seed), img);
        await writePng(join(dir, `${model}-${String(i).padStart(2, '0')}.png`), makeGrid(imgs, S));
      }
    }
    rememberUnedited(unedited, dir, entry, o);
    await finish({ entry, scores, editMs, seconds: (performance.now() - t0) / 1000 });
  }
  return results;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function averageScores(results: EntryResult[]): Record<ModelName, Scores> | undefined {
  const ok = results.filter((r) => r.scores !== undefined);
  if (ok.length === 0) return undefined;
  const out = {} as Record<ModelName, Scores>;
  for (const m of ['baseline', 'edited', 'oracle'] as const) {
    const avg = (key: keyof Scores) => ok.reduce((s, r) => s + r.scores![m][key], 0) / ok.length;
    out[m] = { efficacy: avg('efficacy'), generality: avg('generality'), specificity: avg('specificity') };
  }
  return out;
}

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function resultsCsv(results: EntryResult[]): string {
  const head = [
    'index',
    'old',
    'new',
    ...['baseline', 'edited', 'oracle'].flatMap((m) => [`${m}_efficacy`, `${m}_generality`, `${m}_specificity`]),
    'edit_ms',
    'error',
  ];
  const lines = [head.join(',')];
  for (const r of results) {
    const s = r.scores;
    const nums = (['baseline', 'edited', 'oracle'] as const).flatMap((m) =>
      s ? [s[m].efficacy, s[m].generality, s[m].specificity].map((x) => x.toFixed(4)) : ['', '', ''],
    );
    lines.push(
      [
        String(r.entry.index),
        csvField(r.entry.old),
        csvField(r.entry.new),
        ...nums,
        r.editMs?.toFixed(1) ?? '',
        csvField(r.error ?? ''),
      ].join(','),
    );
  }
  return `${lines.join('\n')}\n`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function resultsHtml(results: EntryResult[], meta: Record<string, string>): string {
  const avg = averageScores(results);
  const rows = avg
    ? (['baseline', 'edited', 'oracle'] as const)
        .map(
          (m) =>
            `<tr><th>${m}</th><td>${pct(avg[m].efficacy)}</td><td>${pct(avg[m].generality)}</td><td>${pct(avg[m].specificity)}</td></tr>`,
        )
        .join('\n')
    : '<tr><td colspan="4">no entry succeeded</td></tr>';
  const entries = results
    .map((r) => {
      const e = r.entry;
      if (r.error !== undefined) return `<h3>${e.index}: ${esc(e.old)} → ${esc(e.new)}</h3><p class="err">error: ${esc(r.error)}</p>`;
      const dir = `images/e${e.index}-${slug(e.old)}`;
      const { tests, targets } = entryPrompts(e);
      const cat = (i: number) => (i === 0 ? 'efficacy' : i <= 5 ? 'generality' : 'specificity');
      const trs = tests
        .map(
          (t, i) =>
            `<tr><td>${cat(i)}</td><td>${esc(t)}<br><small>target: ${esc(targets[i]!)}</small></td>` +
            (['baseline', 'edited', 'oracle'] as const)
              .map((m) => `<td><img src="${dir}/${m}-${String(i).padStart(2, '0')}.png"></td>`)
              .join('') +
            '</tr>',
        )
        .join('\n');
      const s = r.scores!;
      return `<h3>${e.index}: ${esc(e.old)} → ${esc(e.new)}</h3>
<p>edited: efficacy ${pct(s.edited.efficacy)}, generality ${pct(s.edited.generality)}, specificity ${pct(s.edited.specificity)}
 (baseline ${pct(s.baseline.efficacy)} / ${pct(s.baseline.generality)} / ${pct(s.baseline.specificity)};
 oracle ${pct(s.oracle.efficacy)} / ${pct(s.oracle.generality)} / ${pct(s.oracle.specificity)})</p>
<table><tr><th></th><th>prompt</th><th>baseline</th><th>edited</th><th>oracle (target prompt)</th></tr>
${trs}</table>`;
    })
    .join('\n');
  const metaRows = Object.entries(meta)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
    .join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>TIMED evaluation</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{image-rendering:pixelated;height:48px}.err{color:#b00}</style>
</head><body><h1>TIMED evaluation</h1><table>${metaRows}</table>
<h2>Summary (mean over ${results.filter((r) => r.scores).length} entries)</h2>
<table><tr><th></th><th>efficacy</th><th>generality</th><th>specificity</th></tr>
${rows}</table>
<p>Efficacy: images of the source prompt judged to show the destination's attribute. Generality: images of the
positive prompts judged to show their gt prompt's attribute. Specificity: images of the negative prompts judged to
still show their gn prompt's attribute. Oracle: the unedited model on the target prompts themselves.</p>
<h2>Entries</h2>
${entries}
</body></html>
`;
}

// `time-edit eval timed`: the TIMED evaluation (baseline, edited, oracle) with images, CSV and HTML report.
import { mkdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UsageError } from '../cli-errors.js';
import { parseCommandLine } from '../cli-args.js';
import { loadPipeline, defaultModelDir } from '../model/pipeline.js';
import { parseDevice, parseNumber, parsePositiveInt, parseSeeds } from '../sample/options.js';
import { DEFAULT_AUGMENTATIONS } from '../edit/augment.js';
import { openEditContext, type ApplyMode } from '../edit/session.js';
import { DatasetError, readTimed } from '../eval/timed-csv.js';
import { averageScores, colourJudge, resultsCsv, resultsHtml, runTimed, writeTextAtomic, type Judge } from '../eval/timed.js';
import { ClipJudge } from '../eval/clip-judge.js';

export const summary = 'evaluation: eval timed --dataset FILE.csv (efficacy, generality, specificity vs baseline and oracle)';

const usage = `usage: time-edit eval timed [--dataset FILE.csv] [options]

  --dataset FILE      TIMED CSV (old,new,positive1..5,gt1..5,negative1..5,gn1..5); default: the embedded
                      model's toy_timed.csv
  --begin I --end J   entries [I, J) (default: all)
  --seeds N|LIST      seeds per prompt: a count (8 = seeds 0-7) or a list like 0-7 (default 8)
  --steps N           sampling steps (default 50)   --guidance G (default 7.5)
  --lambda L          λ (default 0.1)   --only-v   --no-augment
  --mode embedding|weights   how the edit is applied (default embedding)
  --keep-uncond       diagnostic, not TIME as published: leave the unconditional branch unedited
  --out DIR           output folder (default out/timed): images/, results.csv, report.html, summary.json
  --model PATH        SD 1.x ONNX folder (default: the embedded toy-shapes model)
  --device cpu|cuda --threads N
  --clip DIR          judge with CLIP zero-shot (a Hugging Face CLIPModel ONNX export folder: model.onnx,
                      tokenizer files, preprocessor_config.json); needed for SD models
  --clip-tokenizer DIR  CLIP tokenizer folder when the CLIP folder has none
  --json              print the summary as JSON

Judge: on the embedded model, the toy world's deterministic colour classifier against the colour named in the
target prompt (toy TIMED semantics: gt/gn say what each image should look like). With --clip, the follow-up's
CLIP protocol (old vs [old, new], positive vs [positive, gt], negative vs [negative, gn]; official TIMED
semantics: gn is the negative with the edit applied, which must not happen).
example: time-edit eval timed --seeds 8 --out out/timed`;

export async function run(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === undefined || what === '--help' || what === '-h') {
    console.log(usage);
    return;
  }
  if (what !== 'timed') throw new UsageError(`unknown evaluation '${what}'; available: timed`);
  const parsed = parseCommandLine(
    {
      args: rest,
      options: {
        dataset: { type: 'string' }, begin: { type: 'string' }, end: { type: 'string' }, seeds: { type: 'string' }, steps: { type: 'string' },
        guidance: { type: 'string' }, lambda: { type: 'string' }, 'only-v': { type: 'boolean' }, 'no-augment': { type: 'boolean' },
        mode: { type: 'string' }, out: { type: 'string' }, model: { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' },
        json: { type: 'boolean' }, 'keep-uncond': { type: 'boolean' }, clip: { type: 'string' }, 'clip-tokenizer': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (v.help === true) {
    console.log(usage);
    return;
  }
  const modelDir = v.model ?? defaultModelDir;
  const dataset = resolve(v.dataset ?? join(modelDir, 'toy_timed.csv'));
  if (v.begin !== undefined && !/^\d+$/.test(v.begin.trim())) throw new UsageError(`--begin must be an integer ≥ 0, got '${v.begin}'`);
  const begin = v.begin === undefined ? 0 : Number(v.begin);
  const end = v.end === undefined ? undefined : parsePositiveInt(v.end, '--end', 1);
  const seeds = v.seeds === undefined ? [0, 1, 2, 3, 4, 5, 6, 7] : /^\d+$/.test(v.seeds) ? Array.from({ length: parsePositiveInt(v.seeds, '--seeds', 8) }, (_, i) => i) : parseSeeds(v.seeds);
  const steps = parsePositiveInt(v.steps, '--steps', 50);
  const guidance = parseNumber(v.guidance, '--guidance', 7.5, 0);
  const lambda = parseNumber(v.lambda, '--lambda', 0.1);
  if (!(lambda > 0)) throw new UsageError(`--lambda must be > 0, got ${v.lambda}`);
  const mode = (v.mode ?? 'embedding') as ApplyMode;
  if (mode !== 'embedding' && mode !== 'weights') throw new UsageError(`--mode must be embedding or weights, got '${v.mode}'`);
  if (v['keep-uncond'] === true && mode !== 'embedding') throw new UsageError('--keep-uncond needs --mode embedding');
  const outDir = resolve(v.out ?? 'out/timed');
  let entries;
  try {
    entries = await readTimed(dataset, begin, end);
  } catch (err) {
    if (err instanceof DatasetError) throw new UsageError(err.message);
    throw err;
  }
  try {
    if (!(await stat(outDir)).isDirectory()) throw new UsageError(`--out ${outDir} exists and is not a folder`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
  }
  if (v.clip === undefined && v.model !== undefined) throw new UsageError('an SD model needs a judge: give --clip DIR (a CLIP ONNX folder); the colour classifier only knows the embedded toy world');
  const judge: Judge = v.clip === undefined ? colourJudge : await ClipJudge.load(resolve(v.clip), v['clip-tokenizer'] === undefined ? undefined : resolve(v['clip-tokenizer'])).catch((err: unknown) => {
    throw new UsageError(`cannot load the CLIP judge: ${(err as Error).message}`);
  });
  const augmentations = v['no-augment'] === true ? [] : [...DEFAULT_AUGMENTATIONS];
  const pipeline = await loadPipeline(v.model, { device: parseDevice(v.device), threads: v.threads === undefined ? undefined : parsePositiveInt(v.threads, '--threads', 1) });
  try {
    const ctx = await openEditContext(pipeline);
    await mkdir(outDir, { recursive: true });
    const t0 = performance.now();
    const results = await runTimed(ctx, entries, {
      seeds, steps, guidance, lambda, augmentations, onlyV: v['only-v'] === true, mode, keepUncond: v['keep-uncond'] === true, outDir, judge,
      onProgress: (m) => console.error(`time-edit: ${m} (${((performance.now() - t0) / 1000).toFixed(0)} s)`),
    });
    const meta = {
      model: pipeline.dir, dataset, entries: `${begin}..${begin + entries.length - 1}`, seeds: seeds.join(','), steps: String(steps), guidance: String(guidance),
      lambda: String(lambda), augmentations: augmentations.join('|') || 'none', projections: v['only-v'] === true ? 'V only' : 'K and V', mode, unconditional: v['keep-uncond'] === true ? 'unedited (diagnostic)' : 'edited (as published)', judge: judge.name,
    };
    await writeTextAtomic(join(outDir, 'results.csv'), resultsCsv(results));
    await writeTextAtomic(join(outDir, 'report.html'), resultsHtml(results, meta));
    const avg = averageScores(results);
    const summaryJson = { ...meta, summary: avg ?? null, errors: results.filter((r) => r.error).map((r) => ({ index: r.entry.index, error: r.error })), seconds: (performance.now() - t0) / 1000 };
    await writeTextAtomic(join(outDir, 'summary.json'), JSON.stringify(summaryJson, null, 2) + '\n');
    if (v.json === true) console.log(JSON.stringify(summaryJson, null, 2));
    else {
      const p = (x: number) => `${(100 * x).toFixed(1)}%`.padStart(8);
      console.log(`${'model'.padEnd(10)}${'efficacy'.padStart(10)}${'generality'.padStart(12)}${'specificity'.padStart(13)}`);
      if (avg) for (const m of ['baseline', 'edited', 'oracle'] as const) console.log(`${m.padEnd(10)}  ${p(avg[m].efficacy)}    ${p(avg[m].generality)}     ${p(avg[m].specificity)}`);
      for (const r of results) if (r.error) console.log(`entry ${r.entry.index} failed: ${r.error}`);
      console.error(`wrote ${join(outDir, 'report.html')}, results.csv, summary.json and images/`);
    }
  } finally {
    await pipeline.close();
    if (judge instanceof ClipJudge) await judge.close();
  }
}

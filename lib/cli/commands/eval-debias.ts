// `time-edit eval debias`: the TIMED gender protocol (lib/eval/debias.ts) with images, CSV, summary JSON and HTML
// report; resumable and with a locked --out, as `eval timed` is.
import { rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DEFAULT_AUGMENTATIONS } from '../../edit/augment.js';
import { openEditContext, type ApplyMode } from '../../edit/context.js';
import { ClipJudge } from '../../eval/clip-judge.js';
import { readDebiasDataset } from '../../eval/debias-csv.js';
import {
  clipAttributeJudge,
  DEFAULT_ATTRIBUTE_PAIR,
  DEFAULT_ATTRIBUTE_TEMPLATE,
  toyColourAttributeJudge,
  type AttributeJudge,
} from '../../eval/debias-judges.js';
import {
  appendToDebiasLog,
  DEBIAS_LOG_NAME,
  debiasSettingsDifferences,
  readDebiasLog,
  startDebiasLog,
  type DebiasLogContents,
  type DebiasRunSettings,
} from '../../eval/debias-log.js';
import { debiasCsv, debiasHtml } from '../../eval/debias-report.js';
import { averageDeltas, DEBIAS_MODELS, entryDeltas, runDebias, type DebiasResult } from '../../eval/debias.js';
import { DEFAULT_TIMED_BATCH } from '../../eval/timed.js';
import { RunLogError } from '../../eval/timed-log.js';
import { writeFileAtomic } from '../../fs/durable-file.js';
import { makeDirectory } from '../../fs/make-directory.js';
import { lockOutputFolder } from '../../fs/out-lock.js';
import { defaultModelDir, loadPipeline } from '../../model/pipeline.js';
import { restate, UsageError } from '../errors.js';
import { allEntries, readEarlierLog } from '../earlier-run.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { MAX_SEEDS, parseDevice, parseNumber, parsePositiveInt, parseSeeds } from '../sampling-flags.js';

/** A seed flag: a count N (seeds first..first+N−1) or a list like 0-7 or 1,5,9. */
function seedsFlag(text: string | undefined, flag: string, first: number): number[] {
  if (text === undefined) return Array.from({ length: 8 }, (_, i) => first + i);
  return /^\d+$/.test(text)
    ? Array.from({ length: parsePositiveInt(text, flag, 1, MAX_SEEDS) }, (_, i) => first + i)
    : parseSeeds(text, flag);
}

/** Runs `eval debias` with the arguments after the word `debias`. */
export async function runDebiasCommand(args: string[], usage: string): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      allowPositionals: true,
      options: {
        begin: { type: 'string' },
        end: { type: 'string' },
        seeds: { type: 'string' },
        'search-seeds': { type: 'string' },
        rounds: { type: 'string' },
        'lambda-range': { type: 'string' },
        lambda: { type: 'string' },
        'no-augment': { type: 'boolean' },
        mode: { type: 'string' },
        steps: { type: 'string' },
        guidance: { type: 'string' },
        out: { type: 'string' },
        restart: { type: 'boolean' },
        model: { type: 'string' },
        device: { type: 'string' },
        threads: { type: 'string' },
        clip: { type: 'string' },
        'clip-tokenizer': { type: 'string' },
        'judge-template': { type: 'string' },
        attributes: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  if (parsed.positionals.length > 1) throw new UsageError(`eval debias takes one dataset file, got ${parsed.positionals.length}`);
  const modelDir = resolve(v.model ?? defaultModelDir);
  const dataset = resolve(parsed.positionals[0] ?? join(modelDir, 'toy_debias.csv'));
  if (v.begin !== undefined && !/^\d+$/.test(v.begin.trim())) throw new UsageError(`--begin must be an integer ≥ 0, got '${v.begin}'`);
  const begin = v.begin === undefined ? 0 : Number(v.begin);
  const end = v.end === undefined ? undefined : parsePositiveInt(v.end, '--end', 1);
  const seeds = seedsFlag(v.seeds, '--seeds', 0);
  const searchSeeds = seedsFlag(v['search-seeds'], '--search-seeds', 100);
  const shared = searchSeeds.filter((s) => seeds.includes(s));
  if (shared.length > 0)
    throw new UsageError(
      `--search-seeds and --seeds must be disjoint (λ is chosen on other seeds than it is scored on); both have ${shared.join(',')}`,
    );
  const rounds = parsePositiveInt(v.rounds, '--rounds', 6, 64);
  const range = (v['lambda-range'] ?? '0.01,10000').split(',').map((x) => Number(x.trim()));
  if (!(range.length === 2 && range.every((x) => Number.isFinite(x) && x > 0) && range[0]! < range[1]!))
    throw new UsageError(`--lambda-range must be two numbers 0 < A < B like 0.01,10000, got '${v['lambda-range']}'`);
  const fixedLambda = parseNumber(v.lambda, '--lambda', 0.1);
  if (!(fixedLambda > 0)) throw new UsageError(`--lambda must be > 0, got ${v.lambda}`);
  const steps = parsePositiveInt(v.steps, '--steps', 50);
  const guidance = parseNumber(v.guidance, '--guidance', 7.5, 0);
  const mode = (v.mode ?? 'embedding') as ApplyMode;
  if (mode !== 'embedding' && mode !== 'weights') throw new UsageError(`--mode must be embedding or weights, got '${v.mode}'`);
  const device = parseDevice(v.device);
  const outDir = resolve(v.out ?? 'out/debias');
  try {
    if (!(await stat(outDir)).isDirectory()) throw new UsageError(`--out ${outDir} exists and is not a folder`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
  }
  if (v.clip === undefined && v.model !== undefined)
    throw new UsageError(
      'an SD model needs a judge: give --clip DIR (a CLIP ONNX folder); the colour classifier only knows the embedded toy world',
    );
  if (v.clip === undefined && (v['judge-template'] !== undefined || v.attributes !== undefined))
    throw new UsageError('--judge-template and --attributes set the CLIP judge: give --clip DIR too');
  const template = v['judge-template'] ?? DEFAULT_ATTRIBUTE_TEMPLATE;
  if (!template.includes('{attribute}')) throw new UsageError(`--judge-template must contain {attribute}, got '${template}'`);
  const pairList = v.attributes === undefined ? [...DEFAULT_ATTRIBUTE_PAIR] : v.attributes.split(',').map((a) => a.trim());
  if (pairList.length !== 2 || pairList.some((a) => a === '') || pairList[0] === pairList[1])
    throw new UsageError(`--attributes must be two different words like female,male, got '${v.attributes}'`);
  const pair = pairList as [string, string];
  const data = await readDebiasDataset(dataset, begin, end);
  const clipDir = v.clip === undefined ? undefined : resolve(v.clip);
  const clipTokenizer = v['clip-tokenizer'] === undefined ? undefined : resolve(v['clip-tokenizer']);
  const augmentations = v['no-augment'] === true ? [] : [...DEFAULT_AUGMENTATIONS];
  const judgeName =
    clipDir === undefined
      ? toyColourAttributeJudge.name
      : `CLIP ${clipDir}${clipTokenizer === undefined ? '' : ` (tokenizer ${clipTokenizer})`}: "${template}" ${pair.join('/')}`;
  const settings: Omit<DebiasRunSettings, 'modelFingerprint'> = {
    model: modelDir,
    datasetSha256: data.sha256,
    seeds,
    searchSeeds,
    steps,
    guidance,
    fixedLambda,
    lambdaMin: range[0]!,
    lambdaMax: range[1]!,
    rounds,
    augmentations,
    mode,
    judge: judgeName,
    device,
    batchSize: DEFAULT_TIMED_BATCH,
  };
  const logPath = join(outDir, DEBIAS_LOG_NAME);
  if (v.restart !== true) readEarlier(logPath, settings);
  else if (isForeign(logPath))
    throw new UsageError(`--restart discards eval debias results only, and ${logPath} is not one: pick another --out`);
  let clip: ClipJudge | undefined;
  let judge: AttributeJudge = toyColourAttributeJudge;
  if (clipDir !== undefined) {
    clip = await ClipJudge.load(clipDir, clipTokenizer).catch((err: unknown) => {
      throw restate(err, `cannot load the CLIP judge: ${(err as Error).message}`);
    });
    judge = clipAttributeJudge(clip, template, pair);
  }
  // Every entry is checked against the judge before any model is loaded (e.g. a gender file without --clip).
  try {
    for (const e of data.entries) judge.check(e);
  } catch (err) {
    await clip?.close();
    throw err;
  }
  const pipeline = await loadPipeline(v.model, {
    device,
    threads: v.threads === undefined ? undefined : parsePositiveInt(v.threads, '--threads', 1),
  });
  let releaseLock: (() => void) | undefined;
  try {
    const ctx = await openEditContext(pipeline);
    const fullSettings: DebiasRunSettings = { ...settings, modelFingerprint: ctx.fingerprint };
    makeDirectory(outDir);
    releaseLock = lockOutputFolder(outDir, 'eval debias');
    const earlier = v.restart === true ? undefined : readEarlier(logPath, fullSettings, true);
    if (v.restart === true)
      for (const name of [DEBIAS_LOG_NAME, 'results.csv', 'summary.json', 'report.html', 'images'])
        await rm(join(outDir, name), { recursive: true, force: true });
    const recorded = earlier?.results ?? new Map<number, DebiasResult>();
    const todo = data.entries.filter((e) => recorded.get(e.index)?.counts === undefined);
    if (recorded.size > 0)
      console.error(
        `time-edit: resuming from ${logPath}: ${data.entries.length - todo.length} entries already done, ${todo.length} to compute`,
      );
    startDebiasLog(logPath, fullSettings, [...recorded.values()]);
    const t0 = performance.now();
    const computed = await runDebias(ctx, todo, {
      seeds,
      searchSeeds,
      steps,
      guidance,
      fixedLambda,
      search: { min: range[0]!, max: range[1]!, rounds },
      augmentations,
      mode,
      outDir,
      judge,
      batchSize: DEFAULT_TIMED_BATCH,
      earlier: [...recorded.values()],
      onEntry: (r) => appendToDebiasLog(logPath, r),
      onProgress: (m) => console.error(`time-edit: ${m} (${((performance.now() - t0) / 1000).toFixed(0)} s)`),
    });
    const results = allEntries(recorded, computed);
    const meta = {
      model: pipeline.dir,
      dataset,
      seeds: seeds.join(','),
      searchSeeds: searchSeeds.join(','),
      rounds: String(rounds),
      lambdaRange: `${range[0]}..${range[1]}`,
      fixedLambda: String(fixedLambda),
      steps: String(steps),
      guidance: String(guidance),
      augmentations: augmentations.join('|') || 'none',
      mode,
      judge: judge.name,
    };
    await writeFileAtomic(join(outDir, 'results.csv'), debiasCsv(results));
    await writeFileAtomic(join(outDir, 'report.html'), debiasHtml(results, meta));
    const avg = averageDeltas(results);
    const summaryJson = {
      ...meta,
      summary: avg ?? null,
      entries: results.map((r) =>
        r.counts === undefined
          ? { index: r.entry.index, old: r.entry.old, new: r.entry.new, error: r.error }
          : {
              index: r.entry.index,
              old: r.entry.old,
              new: r.entry.new,
              searchedLambda: r.search!.lambda,
              ...Object.fromEntries(DEBIAS_MODELS.map((m) => [m, entryDeltas(r.counts![m])])),
            },
      ),
      seconds: results.reduce((s, r) => s + (r.seconds ?? 0), 0),
    };
    await writeFileAtomic(join(outDir, 'summary.json'), `${JSON.stringify(summaryJson, null, 2)}\n`);
    if (v.json === true) console.log(JSON.stringify(summaryJson, null, 2));
    else {
      console.log(`${'model'.padEnd(10)}${'Δ validation'.padStart(14)}${'Δ ex1..ex5'.padStart(12)}${'in-between'.padStart(12)}`);
      if (avg)
        for (const m of DEBIAS_MODELS)
          console.log(
            `${m.padEnd(10)}${avg[m].validation.toFixed(3).padStart(14)}${avg[m].examples.toFixed(3).padStart(12)}${avg[m].inBetween.toFixed(2).padStart(12)}`,
          );
      for (const r of results) if (r.error) console.log(`entry ${r.entry.index} failed: ${r.error}`);
      console.error(`wrote ${join(outDir, 'report.html')}, results.csv, summary.json and images/`);
    }
  } finally {
    releaseLock?.();
    await pipeline.close();
    await clip?.close();
  }
}

function isForeign(logPath: string): boolean {
  try {
    readDebiasLog(logPath);
    return false;
  } catch (err) {
    return err instanceof RunLogError && err.kind === 'foreign';
  }
}

/** The log of an earlier run in this --out, checked against this run's settings; undefined when there is none. */
function readEarlier(logPath: string, settings: Partial<DebiasRunSettings>, quiet = false): DebiasLogContents | undefined {
  return readEarlierLog(logPath, readDebiasLog, (recorded) => debiasSettingsDifferences(recorded, settings), quiet);
}

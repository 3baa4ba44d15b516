// `time-edit eval timed`: the TIMED evaluation (baseline, edited, oracle) with images, CSV and HTML report.
import { rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { restate, UsageError } from '../errors.js';
import { allEntries, readEarlierLog } from '../earlier-run.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { loadPipeline, defaultModelDir } from '../../model/pipeline.js';
import {
  inTermsOfMemoryFlag,
  parseDevice,
  parseMaxMemory,
  parseNumber,
  parsePositiveInt,
  parseSeeds,
  SAMPLING_OPTION_FLAGS,
} from '../sampling-flags.js';
import { applyMemoryPlan } from '../../sample/generate.js';
import { DEFAULT_AUGMENTATIONS } from '../../edit/augment.js';
import { openEditContext, type ApplyMode } from '../../edit/context.js';
import { readTimedDataset, type TimedEntry } from '../../eval/timed-csv.js';
import {
  averageScores,
  colourJudge,
  DEFAULT_TIMED_BATCH,
  resultsCsv,
  resultsHtml,
  runTimed,
  type EntryResult,
  type Judge,
} from '../../eval/timed.js';
import {
  appendToRunLog,
  isForeignFile,
  readRunLog,
  RUN_LOG_NAME,
  settingsDifferences,
  startRunLog,
  type RunLogContents,
  type TimedRunSettings,
} from '../../eval/timed-log.js';
import { ClipJudge } from '../../eval/clip-judge.js';
import { makeDirectory } from '../../fs/make-directory.js';
import { writeFileAtomic } from '../../fs/durable-file.js';
import { lockOutputFolder } from '../../fs/out-lock.js';
import { CrossAttentionError, selectLayers, type CrossAttentionMap } from '../../model/cross-attention.js';

/** This command's flags for the library options it sets, so that the library's messages name the flag. */
export const optionFlags = SAMPLING_OPTION_FLAGS;

export const summary =
  'evaluation: eval timed --dataset FILE.csv (efficacy, generality, specificity vs baseline and oracle); eval debias [FILE] (TIMED gender protocol)';

const usage = `usage: time-edit eval timed [--dataset FILE.csv] [options]

  --dataset FILE      TIMED CSV (old,new,positive1..5,gt1..5,negative1..5,gn1..5); default: the embedded
                      model's toy_timed.csv
  --begin I --end J   entries [I, J) (default: all)
  --seeds N|LIST      seeds per prompt: a count (8 = seeds 0-7) or a list like 0-7 (default 8)
  --steps N           sampling steps (default 50)   --guidance G (default 7.5)
  --lambda L          λ (default 0.1)   --only-v   --no-augment
  --only-k            edit the K projections only (an ablation; --only-v is the other)
  --layers LIST       edit only these cross-attention layers: indices, ranges or down/mid/up, e.g. "mid,up"
  --preserve TEXT     a prompt every entry's edit keeps unchanged (repeatable; UCE-style preservation rows)
  --mode embedding|weights   how the edit is applied (default embedding)
  --keep-uncond       diagnostic, not TIME as published: leave the unconditional branch unedited
  --out DIR           output folder (default out/timed): results.jsonl, images/, results.csv, report.html,
                      summary.json
  --restart           discard the results of an earlier run in --out (results.jsonl, the tables, images/)
                      and start over
  --model PATH        SD 1.x ONNX folder (default: the embedded toy-shapes model)
  --device cpu|cuda --threads N
  --clip DIR          judge with CLIP zero-shot (a Hugging Face CLIPModel ONNX export folder: model.onnx,
                      tokenizer files, preprocessor_config.json); needed for SD models
  --clip-tokenizer DIR  CLIP tokenizer folder when the CLIP folder has none
  --json              print the summary as JSON
  --max-memory GB     memory budget every sampling call is planned for (attention slicing chosen to fit); a run
                      that cannot fit is refused before it starts (default: 75% of this machine's memory, or
                      what is available if less; docs/memory.md)
  --queue URL         workers ("time-edit worker") compute the entries, over Redis (redis://[:password@]host:port,
                      rediss:// for TLS, env: $TIME_EDIT_REDIS_URL; docs/queue.md); colour judge only

Judge: on the embedded model, the toy world's deterministic colour classifier against the colour named in the
target prompt (toy TIMED semantics: gt/gn say what each image should look like). With --clip, the follow-up's
CLIP protocol (old vs [old, new], positive vs [positive, gt], negative vs [negative, gn]; official TIMED
semantics: gn is the negative with the edit applied, which must not happen).

Resuming: each entry is recorded in OUT/results.jsonl as it finishes, with the run's settings on its first line.
Rerun the same command (any --begin/--end) to go on after an interruption: entries already done are skipped, and
the tables are rebuilt from every entry recorded in --out, with the numbers an uninterrupted run gives. A rerun
with other settings (seeds, steps, λ, dataset contents, model, judge, …) is refused, naming what differs.
example: time-edit eval timed --seeds 8 --out out/timed`;

const debiasUsage = `usage: time-edit eval debias [FILE.csv] [options]

  FILE                a debiasing CSV in the format of TIMED_gender_test_set.csv (old,new,validation,ex1..ex5);
                      default: the embedded model's toy_debias.csv (shapes for professions, purple for the attribute)
  --begin I --end J   entries [I, J) (default: all)
  --seeds N|LIST      test seeds: every model's images of validation and ex1..ex5 (default 8 = 0-7)
  --search-seeds N|LIST  seeds of each λ-search round, disjoint from --seeds: a count (8 = seeds 100-107)
                      or a list (default 100-107)
  --rounds N          λ-search rounds: bisection on log λ, one measurement each (default 6)
  --lambda-range A,B  the λ interval searched (default 0.01,10000)
  --lambda L          the fixed λ reported beside the searched one (default 0.1, the paper's)
  --no-augment        edit without the paper's augmentations
  --mode embedding|weights   how the edit is applied (default embedding)
  --steps N --guidance G     sampling (default 50, 7.5)
  --out DIR           output folder (default out/debias): results.jsonl, images/, results.csv, report.html,
                      summary.json
  --restart           discard the results of an earlier run in --out and start over
  --model PATH        SD 1.x ONNX folder (default: the embedded toy-shapes model)
  --device cpu|cuda --threads N
  --clip DIR          judge with CLIP zero-shot between two attribute prompts (needed for SD models)
  --clip-tokenizer DIR  CLIP tokenizer folder when the CLIP folder has none
  --judge-template T  the CLIP attribute prompt (default "a photo of a {attribute} {profession}")
  --attributes A,B    the attribute pair CLIP chooses between (default female,male)
  --json              print the summary as JSON

Δ = |p − 0.5| / 0.5 per prompt, p the share of images judged to show the attribute the edit names. Reported for the
unedited model, the edit at --lambda, and the edit at the λ the search chose on the validation prompt (search seeds);
all three on the validation prompt and ex1..ex5 with the test seeds. Resumable like eval timed.
example: time-edit eval debias --seeds 8 --out out/debias`;

export async function run(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === undefined || what === '--help' || what === '-h') {
    console.log(`${usage}\n\n${debiasUsage}`);
    return;
  }
  if (what === 'debias') {
    const { runDebiasCommand } = await import('./eval-debias.js');
    await runDebiasCommand(rest, debiasUsage);
    return;
  }
  if (what !== 'timed') throw new UsageError(`unknown evaluation '${what}'; available: timed, debias`);
  const parsed = parseCommandLine(
    {
      args: rest,
      options: {
        dataset: { type: 'string' },
        begin: { type: 'string' },
        end: { type: 'string' },
        seeds: { type: 'string' },
        steps: { type: 'string' },
        guidance: { type: 'string' },
        lambda: { type: 'string' },
        'only-v': { type: 'boolean' },
        'only-k': { type: 'boolean' },
        layers: { type: 'string' },
        preserve: { type: 'string', multiple: true },
        'no-augment': { type: 'boolean' },
        mode: { type: 'string' },
        out: { type: 'string' },
        model: { type: 'string' },
        device: { type: 'string' },
        threads: { type: 'string' },
        json: { type: 'boolean' },
        restart: { type: 'boolean' },
        'keep-uncond': { type: 'boolean' },
        clip: { type: 'string' },
        'clip-tokenizer': { type: 'string' },
        queue: { type: 'string' },
        'max-memory': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  const restart = v.restart === true;
  const modelDir = resolve(v.model ?? defaultModelDir);
  const dataset = resolve(v.dataset ?? join(modelDir, 'toy_timed.csv'));
  if (v.begin !== undefined && !/^\d+$/.test(v.begin.trim())) throw new UsageError(`--begin must be an integer ≥ 0, got '${v.begin}'`);
  const begin = v.begin === undefined ? 0 : Number(v.begin);
  const end = v.end === undefined ? undefined : parsePositiveInt(v.end, '--end', 1);
  const seeds =
    v.seeds === undefined
      ? [0, 1, 2, 3, 4, 5, 6, 7]
      : /^\d+$/.test(v.seeds)
        ? Array.from({ length: parsePositiveInt(v.seeds, '--seeds', 8) }, (_, i) => i)
        : parseSeeds(v.seeds);
  const steps = parsePositiveInt(v.steps, '--steps', 50);
  const guidance = parseNumber(v.guidance, '--guidance', 7.5, 0);
  const lambda = parseNumber(v.lambda, '--lambda', 0.1);
  if (!(lambda > 0)) throw new UsageError(`--lambda must be > 0, got ${v.lambda}`);
  const mode = (v.mode ?? 'embedding') as ApplyMode;
  if (mode !== 'embedding' && mode !== 'weights') throw new UsageError(`--mode must be embedding or weights, got '${v.mode}'`);
  if (v['keep-uncond'] === true && mode !== 'embedding') throw new UsageError('--keep-uncond needs --mode embedding');
  const device = parseDevice(v.device);
  const outDir = resolve(v.out ?? 'out/timed');
  const data = await readTimedDataset(dataset, begin, end);
  const entries = data.entries;
  try {
    if (!(await stat(outDir)).isDirectory()) throw new UsageError(`--out ${outDir} exists and is not a folder`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
  }
  if (v.clip === undefined && v.model !== undefined)
    throw new UsageError(
      'an SD model needs a judge: give --clip DIR (a CLIP ONNX folder); the colour classifier only knows the embedded toy world',
    );
  const clipDir = v.clip === undefined ? undefined : resolve(v.clip);
  const clipTokenizer = v['clip-tokenizer'] === undefined ? undefined : resolve(v['clip-tokenizer']);
  const augmentations = v['no-augment'] === true ? [] : [...DEFAULT_AUGMENTATIONS];
  const onlyV = v['only-v'] === true;
  const onlyK = v['only-k'] === true;
  if (onlyV && onlyK) throw new UsageError('--only-v and --only-k contradict each other: give one of them (neither edits K and V)');
  if (v.queue !== undefined && v.clip !== undefined)
    throw new UsageError('--clip cannot be combined with --queue (workers judge with the colour classifier only)');
  const preserve = v.preserve ?? [];
  if (preserve.some((p) => p.trim() === '')) throw new UsageError('--preserve prompts must not be empty');
  const keepUncond = v['keep-uncond'] === true;
  // Everything that changes the numbers but the model's fingerprint, which needs the model loaded.
  const settings: Omit<TimedRunSettings, 'modelFingerprint'> = {
    model: modelDir,
    datasetSha256: data.sha256,
    seeds,
    steps,
    guidance,
    lambda,
    augmentations,
    onlyV,
    mode,
    keepUncond,
    judge:
      clipDir === undefined ? colourJudge.name : `CLIP ${clipDir}${clipTokenizer === undefined ? '' : ` (tokenizer ${clipTokenizer})`}`,
    device,
    batchSize: DEFAULT_TIMED_BATCH,
    // The ablations are recorded only when set, so a default run's log is what it was before they existed; an
    // undefined value still takes part in the comparison with an earlier run's log.
    onlyK: onlyK ? true : undefined,
    preserve: preserve.length > 0 ? preserve : undefined,
  };
  // --layers is resolved against the UNet's layers once the model is loaded; until then it is left out.
  if (v.layers === undefined) settings.layers = undefined;
  const logPath = join(outDir, RUN_LOG_NAME);
  // An earlier run's log is checked before any model is loaded, so that a mismatch fails fast.
  if (restart && isForeignFile(logPath))
    throw new UsageError(
      `--restart discards eval timed results only, and ${logPath} is not one (its first line is no eval timed header): pick another --out`,
    );
  if (!restart) readEarlierRun(logPath, settings); // fails fast on a mismatch; read again once the folder is locked
  const judge: Judge =
    clipDir === undefined
      ? colourJudge
      : await ClipJudge.load(clipDir, clipTokenizer).catch((err: unknown) => {
          throw restate(err, `cannot load the CLIP judge: ${(err as Error).message}`);
        });
  const maxMemoryBytes = parseMaxMemory(v['max-memory']);
  const pipeline = await loadPipeline(v.model, {
    device,
    threads: v.threads === undefined ? undefined : parsePositiveInt(v.threads, '--threads', 1),
  });
  let releaseLock: (() => void) | undefined;
  try {
    const ctx = await openEditContext(pipeline);
    const layers = v.layers === undefined ? undefined : layersFlag(ctx.map, v.layers);
    const fullSettings: TimedRunSettings = { ...settings, modelFingerprint: ctx.fingerprint, layers };
    makeDirectory(outDir);
    releaseLock = lockOutputFolder(outDir, 'eval timed');
    // The log as it is now that no other run can write it (one may have finished while the model loaded).
    const earlier = restart ? undefined : readEarlierRun(logPath, fullSettings, true);
    if (restart) await discardEarlierRun(outDir);
    const recorded = earlier?.results ?? new Map<number, EntryResult>();
    const todo = entries.filter((e) => recorded.get(e.index)?.scores === undefined);
    reportResume(logPath, entries, recorded, todo);
    startRunLog(logPath, fullSettings, [...recorded.values()]);
    // The memory plan of the largest call (the baseline and oracle prompts of an entry, up to 10, at the batch
    // size): a run that cannot fit stops here, before any entry; its slicing is kept by the edited UNet copies.
    await applyMemoryPlan(pipeline, {
      prompts: Array.from({ length: 10 }, () => ''),
      seeds,
      steps,
      guidance,
      height: pipeline.defaultSize,
      width: pipeline.defaultSize,
      batchSize: DEFAULT_TIMED_BATCH,
      ...(maxMemoryBytes !== undefined ? { maxMemoryBytes } : {}),
    }).catch((err: unknown) => {
      throw inTermsOfMemoryFlag(err);
    });
    const t0 = performance.now();
    const runEntries = v.queue === undefined ? runTimed : await import('./queue.js').then((m) => m.timedThroughQueue(v.queue!));
    const computed = await runEntries(ctx, todo, {
      seeds,
      steps,
      guidance,
      lambda,
      augmentations,
      onlyV,
      onlyK,
      layers,
      preserve,
      mode,
      keepUncond,
      outDir,
      judge,
      batchSize: DEFAULT_TIMED_BATCH,
      ...(maxMemoryBytes !== undefined ? { maxMemoryBytes } : {}),
      earlier: [...recorded.values()],
      onEntry: (r) => appendToRunLog(logPath, r),
      onProgress: (m) => console.error(`time-edit: ${m} (${((performance.now() - t0) / 1000).toFixed(0)} s)`),
    });
    // The tables cover every entry recorded in this --out, whichever run computed it.
    const results = allEntries(recorded, computed);
    const meta = {
      model: pipeline.dir,
      dataset,
      entries: indexRanges(results.map((r) => r.entry.index)),
      seeds: seeds.join(','),
      steps: String(steps),
      guidance: String(guidance),
      lambda: String(lambda),
      augmentations: augmentations.join('|') || 'none',
      projections: onlyV ? 'V only' : onlyK ? 'K only' : 'K and V',
      ...(layers !== undefined ? { layers: layers.join(',') } : {}),
      ...(preserve.length > 0 ? { preserve: preserve.join('|') } : {}),
      mode,
      unconditional: keepUncond ? 'unedited (diagnostic)' : 'edited (as published)',
      judge: judge.name,
    };
    await writeFileAtomic(join(outDir, 'results.csv'), resultsCsv(results));
    await writeFileAtomic(join(outDir, 'report.html'), resultsHtml(results, meta));
    const avg = averageScores(results);
    // seconds: the time spent on the entries, summed over the runs that computed them.
    const seconds = results.reduce((s, r) => s + (r.seconds ?? 0), 0);
    const summaryJson = {
      ...meta,
      summary: avg ?? null,
      errors: results.filter((r) => r.error).map((r) => ({ index: r.entry.index, error: r.error })),
      seconds,
    };
    await writeFileAtomic(join(outDir, 'summary.json'), `${JSON.stringify(summaryJson, null, 2)}\n`);
    if (v.json === true) console.log(JSON.stringify(summaryJson, null, 2));
    else {
      const p = (x: number) => `${(100 * x).toFixed(1)}%`.padStart(8);
      console.log(`${'model'.padEnd(10)}${'efficacy'.padStart(10)}${'generality'.padStart(12)}${'specificity'.padStart(13)}`);
      if (avg)
        for (const m of ['baseline', 'edited', 'oracle'] as const)
          console.log(`${m.padEnd(10)}  ${p(avg[m].efficacy)}    ${p(avg[m].generality)}     ${p(avg[m].specificity)}`);
      for (const r of results) if (r.error) console.log(`entry ${r.entry.index} failed: ${r.error}`);
      console.error(`wrote ${join(outDir, 'report.html')}, results.csv, summary.json and images/`);
    }
  } finally {
    releaseLock?.();
    await pipeline.close();
    if (judge instanceof ClipJudge) await judge.close();
  }
}

/** --layers LIST resolved against this UNet's layers; a list it does not have is a usage error naming the flag. */
function layersFlag(map: CrossAttentionMap, list: string): number[] {
  try {
    return selectLayers(map, list);
  } catch (err) {
    if (err instanceof CrossAttentionError) throw new UsageError(`--layers: ${err.message}`);
    throw err;
  }
}

/** The log of an earlier run in this --out, checked against this run's settings; undefined when there is none. */
function readEarlierRun(logPath: string, settings: Partial<TimedRunSettings>, quiet = false): RunLogContents | undefined {
  return readEarlierLog(logPath, readRunLog, (recorded) => settingsDifferences(recorded, settings), quiet);
}

/** --restart: removes what an earlier run wrote to this --out (and only that). */
async function discardEarlierRun(outDir: string): Promise<void> {
  for (const name of [RUN_LOG_NAME, 'results.csv', 'summary.json', 'report.html', 'images'])
    await rm(join(outDir, name), { recursive: true, force: true });
}

/** Tells which entries of this run's range are skipped (done earlier), redone (failed earlier) or computed. */
function reportResume(logPath: string, entries: TimedEntry[], recorded: Map<number, EntryResult>, todo: TimedEntry[]): void {
  if (recorded.size === 0) return;
  const inRange = new Set(entries.map((e) => e.index));
  const done = entries.filter((e) => recorded.get(e.index)?.scores !== undefined).map((e) => e.index);
  const failed = todo.filter((e) => recorded.has(e.index));
  const outside = [...recorded.keys()].filter((i) => !inRange.has(i));
  const parts = [
    `resuming from ${logPath}: ${done.length > 0 ? `${entriesLabel(done)} already done (skipped)` : 'no entry of this range done yet'}`,
  ];
  if (failed.length > 0)
    parts.push(`${entriesLabel(failed.map((e) => e.index))} failed before and ${failed.length === 1 ? 'is' : 'are'} computed again`);
  parts.push(todo.length > 0 ? `computing ${indexRanges(todo.map((e) => e.index))}` : 'nothing left to compute');
  if (outside.length > 0) parts.push(`the tables also include ${entriesLabel(outside)} recorded earlier`);
  console.error(`time-edit: ${parts.join('; ')}`);
  for (const e of failed) console.error(`time-edit: entry ${e.index} failed before: ${recorded.get(e.index)!.error}`);
}

/** "entry 3" or "entries 0..2, 5" */
function entriesLabel(indices: number[]): string {
  return `${indices.length === 1 ? 'entry' : 'entries'} ${indexRanges(indices)}`;
}

/** [0, 1, 2, 5] → "0..2, 5" */
function indexRanges(indices: number[]): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    out.push(i === j ? String(sorted[i]) : `${sorted[i]}..${sorted[j]}`);
    i = j + 1;
  }
  return out.join(', ');
}

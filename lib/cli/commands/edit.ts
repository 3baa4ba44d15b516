// `time-edit edit`: compute a TIME edit from a source and a destination prompt, save it as an edit file, and
// write a before/after grid of the prompts you want to see (default: the source prompt).
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { makeGrid, scaleToAtLeast } from '../../image/grid.js';
import { writePng } from '../../image/png.js';
import { loadPipeline } from '../../model/pipeline.js';
import { generate } from '../../sample/generate.js';
import { parseDevice, parseNumber, parsePositiveInt, parseScheduler, parseSeeds, SAMPLING_OPTION_FLAGS } from '../sampling-flags.js';
import { schedulerNames } from '../../sample/schedulers.js';
import { DEFAULT_AUGMENTATIONS } from '../../edit/augment.js';
import { chainEdits, type Edit } from '../../edit/edit.js';
import { saveEdit } from '../../edit/edit-file.js';
import { exportEditedPipeline } from '../../edit/apply.js';
import { computeModelEdit, loadEditFor, openEditContext, prepareEditedGeneration, type ApplyMode } from '../../edit/context.js';
import { describeCrossAttention } from '../../model/cross-attention.js';
import type { BatchDefaults, BatchReport } from '../../edit/batch.js';
import { makeDirectory } from '../../fs/make-directory.js';
import { progressBar } from '../progress.js';

/** This command's flags for the library options it sets, so that the library's messages name the flag. */
export const optionFlags = { ...SAMPLING_OPTION_FLAGS, height: '--height', width: '--width', batchSize: '--images-per-call' };

export const summary = 'TIME edit: --source "a circle" --dest "a purple circle" → edit file + before/after grid';

const usage = `usage: time-edit edit --source TEXT --dest TEXT [options]
       time-edit edit --batch EDITS.jsonl --out DIR [options]

  --source TEXT           the under-specified prompt whose implicit assumption is edited ("a circle")
  --dest TEXT             the same prompt with the wanted attribute ("a purple circle"); every source word must
                          appear in it, in order
  --pair SRC=>DST         an additional pair solved jointly with the first (repeatable)
  --lambda L              regularisation λ > 0 (default 0.1, the paper's value)
  --only-v                edit the V projections only (the official code without --with_to_k)
  --no-augment            do not add the augmented prompts
  --augmentations LIST    templates separated by '|' (default "${DEFAULT_AUGMENTATIONS.join('|')}")
  --preserve TEXT         a prompt whose embedding must stay put (repeatable; UCE-style preservation rows)
  --on FILE               compose: apply this new edit on top of an existing edit file
  --prompt TEXT           a prompt for the before/after grid (repeatable; default: the source prompt)
  --seeds LIST            seeds for the grid (default 0-7)
  --no-grid               only compute and save the edit
  --grid-scale N          enlarge the grid N times, nearest neighbour (default: the smallest N that makes each
                          image at least 128 px wide, e.g. 4 for 32×32 images; 1 keeps the model's size)
  --mode embedding|weights  how the grid's edited images are made (default embedding; both give the same images)
  --export DIR            also write an edited pipeline folder (patched UNet weights, everything else linked)
  --force                 replace an existing --export folder
  --out DIR               output folder (default out): edit.safetensors, before-after.png
  --model PATH            SD 1.x ONNX pipeline folder (default: the embedded toy-shapes model)
  --steps N --guidance G  sampling for the grid (default 50, 7.5)
  --scheduler NAME        ${schedulerNames.join(' | ')} (default: the model's scheduler_config.json)
  --height H --width W    grid image size in pixels, multiples of the VAE factor (default: the model's native size)
  --images-per-call N     images per UNet call for the grid (default 8; generate calls this --batch, which here
                          is the JSONL batch of edits)
  --device cpu|cuda --threads N
  --json                  print a JSON summary on stdout

Grid layout: for each prompt, one row before and one row after the edit; one column per seed.
With --batch, each line gives its own source and destination; --lambda, --only-v, --no-augment, --augmentations
and --preserve are defaults for the lines that do not set that field ("lambda", "onlyV", "augmentations",
"preserve"); --model, --device, --threads, --out, --json apply to the run; --no-grid is accepted (a batch draws
no grid); --pair, --on, --prompt, --seeds, --grid-scale, --mode, --steps, --guidance, --scheduler, --height, --width,
--images-per-call, --export and --force are refused.
example: time-edit edit --source "a circle" --dest "a purple circle" --seeds 0-7 --out out/`;

/** The smallest side, in pixels, an image of the before/after grid is enlarged to unless --grid-scale says otherwise. */
const MIN_GRID_CELL = 128;

/** Flags that have no meaning with --batch, and why (the refusal names them). */
const NOT_WITH_BATCH: Record<string, string> = {
  source: 'each line of the batch file gives its own source and destination',
  dest: 'each line of the batch file gives its own source and destination',
  pair: 'each line of the batch file gives its own source and destination',
  on: 'a batch does not compose onto an existing edit',
  prompt: 'a batch draws no before/after grid',
  seeds: 'a batch draws no before/after grid',
  'grid-scale': 'a batch draws no before/after grid',
  mode: 'a batch draws no before/after grid',
  steps: 'a batch draws no before/after grid',
  scheduler: 'a batch draws no before/after grid',
  height: 'a batch draws no before/after grid',
  width: 'a batch draws no before/after grid',
  'images-per-call': 'a batch draws no before/after grid',
  guidance: 'a batch draws no before/after grid',
  export: 'a batch exports no edited pipeline',
  force: 'a batch exports no edited pipeline',
};

function parsePair(text: string): { source: string; destination: string } {
  const i = text.indexOf('=>');
  if (i < 0) throw new UsageError(`--pair must look like "a circle=>a purple circle", got '${text}'`);
  return { source: text.slice(0, i).trim(), destination: text.slice(i + 2).trim() };
}

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      allowPositionals: false,
      options: {
        source: { type: 'string' },
        dest: { type: 'string' },
        pair: { type: 'string', multiple: true },
        lambda: { type: 'string' },
        'only-v': { type: 'boolean' },
        'no-augment': { type: 'boolean' },
        augmentations: { type: 'string' },
        preserve: { type: 'string', multiple: true },
        on: { type: 'string' },
        prompt: { type: 'string', multiple: true },
        seeds: { type: 'string' },
        'no-grid': { type: 'boolean' },
        'grid-scale': { type: 'string' },
        mode: { type: 'string' },
        export: { type: 'string' },
        force: { type: 'boolean' },
        out: { type: 'string' },
        model: { type: 'string' },
        steps: { type: 'string' },
        guidance: { type: 'string' },
        scheduler: { type: 'string' },
        height: { type: 'string' },
        width: { type: 'string' },
        'images-per-call': { type: 'string' },
        device: { type: 'string' },
        threads: { type: 'string' },
        json: { type: 'boolean' },
        batch: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  if (v['no-augment'] === true && v.augmentations !== undefined)
    throw new UsageError('--no-augment and --augmentations contradict each other: give one of them');
  const lambda = parseNumber(v.lambda, '--lambda', 0.1);
  if (!(lambda > 0)) throw new UsageError(`--lambda must be > 0, got ${v.lambda}`);
  const augmentations =
    v['no-augment'] === true ? [] : v.augmentations !== undefined ? v.augmentations.split('|') : [...DEFAULT_AUGMENTATIONS];
  const device = parseDevice(v.device);
  const threads = v.threads === undefined ? undefined : parsePositiveInt(v.threads, '--threads', 1);
  if (v.batch !== undefined) {
    const refused = Object.keys(NOT_WITH_BATCH).filter((f) => (v as Record<string, unknown>)[f] !== undefined);
    if (refused.length > 0) {
      const why = [...new Set(refused.map((f) => NOT_WITH_BATCH[f]!))].join('; ');
      throw new UsageError(`${refused.map((f) => `--${f}`).join(', ')} cannot be combined with --batch (${why})`);
    }
  }
  const outDir = resolve(v.out ?? 'out');
  try {
    if (!(await stat(outDir)).isDirectory()) throw new UsageError(`--out ${outDir} exists and is not a folder`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
  }
  if (v.batch !== undefined) {
    // Flags a line can set are defaults for the lines that do not set them; only the flags given are passed on,
    // so that an unset flag leaves the library's defaults (λ 0.1, K and V, the paper's templates, no preserve).
    const defaults: BatchDefaults = {
      ...(v.lambda !== undefined ? { lambda } : {}),
      ...(v['only-v'] === true ? { onlyV: true } : {}),
      ...(v['no-augment'] === true || v.augmentations !== undefined ? { augmentations } : {}),
      ...(v.preserve !== undefined ? { preserve: v.preserve } : {}),
    };
    const { runBatch } = await import('../../edit/batch.js');
    // The bar goes to stderr, so it is drawn with --json too (stdout holds only the JSON).
    const s = await runBatch(v.batch, outDir, {
      model: v.model,
      device,
      threads,
      defaults,
      onProgress: progressBar('lines', { rate: 'lines' }),
      onRepair: (line, file, problem) =>
        console.error(`time-edit: warning: line ${line}: its edit file ${file} is damaged (${problem}); computing it again`),
    });
    reportBatch(s, v.json === true);
    // Scripts must see that lines failed; the others' results are written and a rerun retries only the failures.
    if (s.errors > 0) process.exitCode = 1;
    return;
  }
  if (v.source === undefined || v.dest === undefined) throw new UsageError(`--source and --dest are required\n${usage}`);
  const pairs = [{ source: v.source, destination: v.dest }, ...(v.pair ?? []).map(parsePair)];
  for (const p of pairs)
    if (p.source.trim() === '' || p.destination.trim() === '') throw new UsageError('source and destination prompts must not be empty');
  if ((v.preserve ?? []).some((p) => p.trim() === '')) throw new UsageError('--preserve prompts must not be empty');
  const seeds = parseSeeds(v.seeds ?? '0-7');
  const steps = parsePositiveInt(v.steps, '--steps', 50);
  const guidance = parseNumber(v.guidance, '--guidance', 7.5, 0);
  // Parsed and bounded as generate parses its --scheduler, --height, --width and --batch (FLAG_LIMITS); unset
  // flags are not passed on, so the grid is sampled exactly as before they existed.
  const scheduler = parseScheduler(v.scheduler);
  const batchSize = v['images-per-call'] === undefined ? undefined : parsePositiveInt(v['images-per-call'], '--images-per-call', 8);
  const heightFlag = v.height === undefined ? undefined : parsePositiveInt(v.height, '--height', 1);
  const widthFlag = v.width === undefined ? undefined : parsePositiveInt(v.width, '--width', 1);
  const gridScale = v['grid-scale'] === undefined ? undefined : parsePositiveInt(v['grid-scale'], '--grid-scale', 1);
  const mode = (v.mode ?? 'embedding') as ApplyMode;
  if (mode !== 'embedding' && mode !== 'weights') throw new UsageError(`--mode must be embedding or weights, got '${v.mode}'`);
  const exportDir = v.export === undefined ? undefined : resolve(v.export);
  if (exportDir !== undefined && v.force !== true) {
    const exists = await stat(exportDir).then(
      () => true,
      () => false,
    );
    if (exists) throw new UsageError(`--export ${exportDir} already exists (add --force to replace it)`);
  }

  const pipeline = await loadPipeline(v.model, { device, threads });
  try {
    const ctx = await openEditContext(pipeline);
    const t0 = performance.now();
    const computed = await computeModelEdit(ctx, {
      pairs,
      lambda,
      augmentations,
      mode: v['only-v'] === true ? 'v' : 'kv',
      preserve: v.preserve ?? [],
    });
    const solveMs = performance.now() - t0;
    for (const w of computed.warnings) console.error(`time-edit: warning: ${w}`);
    let edit: Edit = computed.edit;
    if (v.on !== undefined) edit = chainEdits(await loadEditFor(ctx, v.on), edit);
    makeDirectory(outDir);
    const editPath = join(outDir, 'edit.safetensors');
    saveEdit(editPath, edit);
    const layers = describeCrossAttention(ctx.map);
    const projections = v['only-v'] === true ? 'V' : 'K and V';
    if (v.json !== true) {
      console.error(
        `edited the ${projections} projections of ${ctx.map.layers.length} cross-attention layers (d = ${ctx.map.d}, ${computed.edit.steps[0]!.rows} rows, λ = ${lambda}):`,
      );
      for (const l of layers) console.error(`  ${l}`);
      console.error(`wrote ${editPath}`);
    }
    let gridPath: string | null = null;
    const prompts = v.prompt ?? [v.source];
    if (v['no-grid'] !== true) {
      const height = heightFlag ?? pipeline.defaultSize;
      const width = widthFlag ?? pipeline.defaultSize;
      const bar = (label: string) => (v.json === true ? undefined : progressBar('UNet calls', { label }));
      const base = {
        prompts,
        seeds,
        steps,
        guidance,
        height,
        width,
        ...(scheduler !== undefined ? { scheduler } : {}),
        ...(batchSize !== undefined ? { batchSize } : {}),
      };
      const before = await generate(pipeline, { ...base, onProgress: bar('before') });
      const edited = await prepareEditedGeneration(ctx, edit, mode);
      let after;
      try {
        after = await generate(edited.pipeline, await edited.options({ ...base, onProgress: bar('after ') }));
      } finally {
        await edited.close();
      }
      const rows = prompts.flatMap((_, p) => [
        ...before.slice(p * seeds.length, (p + 1) * seeds.length),
        ...after.slice(p * seeds.length, (p + 1) * seeds.length),
      ]);
      gridPath = join(outDir, 'before-after.png');
      // Small models' images (32×32 for the embedded one) are enlarged so the picture can be seen; whole factors
      // and nearest neighbour keep every pixel's colour exact.
      await writePng(gridPath, makeGrid(rows, seeds.length, { scale: gridScale ?? scaleToAtLeast(width, MIN_GRID_CELL) }));
      if (v.json !== true) console.error(`wrote ${gridPath} (${prompts.length} prompt(s) × [before, after] rows × ${seeds.length} seeds)`);
    }
    if (exportDir !== undefined) {
      await exportEditedPipeline(pipeline.dir, ctx.unet, edit, exportDir, { force: v.force === true });
      if (v.json !== true) console.error(`wrote edited pipeline ${exportDir}`);
    }
    if (v.json === true)
      console.log(
        JSON.stringify(
          {
            edit: editPath,
            grid: gridPath,
            export: exportDir ?? null,
            pairs,
            lambda,
            augmentations,
            onlyV: v['only-v'] === true,
            layers: ctx.map.layers.map((l) => ({ index: l.index, name: l.name, width: l.width, k: l.k.initializer, v: l.v.initializer })),
            rows: computed.edit.steps[0]!.rows,
            solveMs,
            fingerprint: ctx.fingerprint,
            warnings: computed.warnings,
          },
          null,
          2,
        ),
      );
  } finally {
    await pipeline.close();
  }
}

/** The summary of `edit --batch`: JSON on stdout with --json, else one line on stderr. */
function reportBatch(s: BatchReport, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(s, null, 2));
    return;
  }
  const redone = [
    ...(s.retried > 0 ? [`${s.retried} retried after an earlier failure`] : []),
    ...(s.recomputed > 0 ? [`${s.recomputed} recomputed because their λ, only-v, augmentations, preserve or the model changed`] : []),
    ...(s.repaired > 0 ? [`${s.repaired} recomputed because their edit file was damaged`] : []),
  ];
  console.error(
    `${s.ok} edits written, ${s.errors} errors${redone.length > 0 ? ` (${redone.join(', ')})` : ''}, ${s.skipped} lines already done (of ${s.total}); ` +
      `${s.editsPerSecond.toFixed(1)} edits/s end to end, ${s.solverEditsPerSecond.toFixed(1)} edits/s in the solver (${s.solver}); ` +
      `each edit covers ${s.layers} layers × K/V; results in ${s.results}`,
  );
}

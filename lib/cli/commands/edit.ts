// `time-edit edit`: compute a TIME edit from a source and a destination prompt, save it as an edit file, and
// write a before/after grid of the prompts you want to see (default: the source prompt).
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { inTermsOfFlags, UsageError } from '../errors.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { makeGrid, scaleToAtLeast } from '../../image/grid.js';
import { writePng } from '../../image/png.js';
import { loadPipeline } from '../../model/pipeline.js';
import { generate } from '../../sample/generate.js';
import {
  inTermsOfMemoryFlag,
  parseDevice,
  parseMaxMemory,
  parseNumber,
  parsePositiveInt,
  parseScheduler,
  parseSeeds,
  SAMPLING_OPTION_FLAGS,
} from '../sampling-flags.js';
import { schedulerNames } from '../../sample/schedulers.js';
import { DEFAULT_AUGMENTATIONS } from '../../edit/augment.js';
import { chainEdits, type Edit } from '../../edit/edit.js';
import { saveEdit } from '../../edit/edit-file.js';
import { exportEditedPipeline } from '../../edit/apply.js';
import {
  computeModelEdit,
  loadEditFor,
  openEditContext,
  prepareEditedGeneration,
  openCheckpointEditContext,
  type ApplyMode,
  type CheckpointEditContext,
  type EditContext,
} from '../../edit/context.js';
import { factorEdit, LORA_TRUNCATIONS, type LoraTruncation } from '../../edit/lora-factor.js';
import { saveLora } from '../../edit/lora-file.js';
import { kvWeightsOfCheckpoint, kvWeightsOfOnnx } from '../../edit/lora-modules.js';
import { writeMergedCheckpoint } from '../../edit/merged-checkpoint.js';
import { writeEditedDiffusersFolder } from '../../edit/diffusers-folder.js';
import { type Checkpoint, detectModelPath } from '../../checkpoint/open-checkpoint.js';
import { CrossAttentionError, describeCrossAttention, selectLayers, type CrossAttentionMap } from '../../model/cross-attention.js';
import type { BatchDefaults, BatchReport } from '../../edit/batch.js';
import { makeDirectory } from '../../fs/make-directory.js';
import { progressBar } from '../progress.js';

/** This command's flags for the library options it sets, so that the library's messages name the flag. */
export const optionFlags = {
  ...SAMPLING_OPTION_FLAGS,
  height: '--height',
  width: '--width',
  batchSize: '--images-per-call',
  maxMemoryBytes: '--max-memory',
};

export const summary = 'TIME edit: --source "a circle" --dest "a purple circle" → edit file + before/after grid';

const usage = `usage: time-edit edit --source TEXT --dest TEXT [options]
       time-edit edit --batch EDITS.jsonl --out DIR [options]

  --source TEXT           the under-specified prompt whose implicit assumption is edited ("a circle")
  --dest TEXT             the same prompt with the wanted attribute ("a purple circle"); every source word must
                          appear in it, in order
  --pair SRC=>DST         an additional pair solved jointly with the first (repeatable)
  --lambda L              regularisation λ > 0 (default 0.1, the paper's value)
  --only-v                edit the V projections only (the official code without --with_to_k)
  --only-k                edit the K projections only (an ablation: V keeps its weights bit for bit)
  --layers LIST           edit only these cross-attention layers: indices, ranges and block names, e.g. "0,6",
                          "0-5", "down", "mid,up" (default: all 16 of SD 1.x; edit's output lists them)
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
  --lora FILE             also write the edit as a kohya-format LoRA (diffusers, ComfyUI, AUTOMATIC1111, Forge and
                          kohya load it; docs/lora.md)
  --rank R                the LoRA's rank, one for all modules (default: the exact rank, min(rows, d))
  --lora-truncation T     per-matrix (default) or shared: how a LoRA below the exact rank is truncated
  --save-checkpoint FILE  also write the edited model as a single .safetensors checkpoint (--model a single file:
                          only the 32 K/V tensors change)
  --save-model DIR        also write the edited diffusers folder (--model a diffusers folder: only unet/ changes)
  --force                 replace an existing --export folder
  --out DIR               output folder (default out): edit.safetensors, before-after.png
  --model PATH            SD 1.x ONNX pipeline folder (default: the embedded toy-shapes model), or an SD 1.x
                          checkpoint: a .safetensors file or a diffusers folder (edit file, --lora, --save-*; no
                          grid: sampling needs an ONNX folder; docs/checkpoints.md)
  --tokenizer DIR         the CLIP tokenizer folder for a single-file checkpoint, which holds none
  --steps N --guidance G  sampling for the grid (default 50, 7.5)
  --scheduler NAME        ${schedulerNames.join(' | ')} (default: the model's scheduler_config.json)
  --height H --width W    grid image size in pixels, multiples of the VAE factor (default: the model's native size)
  --images-per-call N     images per UNet call for the grid (default 8; generate calls this --batch, which here
                          is the JSONL batch of edits)
  --max-memory GB         memory budget for the grid: images per call and attention slicing are chosen to fit
                          (default: 75% of this machine's memory, or what is available if less; docs/memory.md)
  --device cpu|cuda --threads N
  --json                  print a JSON summary on stdout
  --queue URL             with --batch: workers ("time-edit worker") compute the chunks of lines, over Redis
                          (redis://[:password@]host:port, rediss:// for TLS, env: $TIME_EDIT_REDIS_URL; docs/queue.md)

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
  'max-memory': 'a batch draws no before/after grid',
  guidance: 'a batch draws no before/after grid',
  'only-k': 'a batch line chooses between K and V and V only with its "onlyV" field',
  layers: 'a batch line edits all cross-attention layers',
  export: 'a batch exports no edited pipeline',
  force: 'a batch exports no edited pipeline',
  lora: 'a batch writes edit files only',
  rank: 'a batch writes edit files only',
  'lora-truncation': 'a batch writes edit files only',
  'save-checkpoint': 'a batch writes edit files only',
  'save-model': 'a batch writes edit files only',
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
        'only-k': { type: 'boolean' },
        layers: { type: 'string' },
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
        lora: { type: 'string' },
        rank: { type: 'string' },
        'lora-truncation': { type: 'string' },
        'save-checkpoint': { type: 'string' },
        'save-model': { type: 'string' },
        out: { type: 'string' },
        model: { type: 'string' },
        tokenizer: { type: 'string' },
        steps: { type: 'string' },
        guidance: { type: 'string' },
        scheduler: { type: 'string' },
        height: { type: 'string' },
        width: { type: 'string' },
        'images-per-call': { type: 'string' },
        'max-memory': { type: 'string' },
        device: { type: 'string' },
        threads: { type: 'string' },
        json: { type: 'boolean' },
        batch: { type: 'string' },
        queue: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  if (v['no-augment'] === true && v.augmentations !== undefined)
    throw new UsageError('--no-augment and --augmentations contradict each other: give one of them');
  if (v['only-v'] === true && v['only-k'] === true)
    throw new UsageError('--only-v and --only-k contradict each other: give one of them (neither edits K and V)');
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
  if (v.queue !== undefined && v.batch === undefined) throw new UsageError('--queue needs --batch FILE (a single edit runs here)');
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
    const queued = v.queue === undefined ? undefined : await import('./queue.js').then((m) => m.queueTarget(v.queue!, 'chunks of lines'));
    const runner = queued === undefined ? runBatch : (await import('../../queue/batch.js')).runBatchOnQueue.bind(undefined, queued);
    // The bar goes to stderr, so it is drawn with --json too (stdout holds only the JSON).
    const s = await runner(v.batch, outDir, {
      model: v.model,
      ...(v.tokenizer !== undefined ? { tokenizer: resolve(v.tokenizer) } : {}),
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
  const maxMemoryBytes = parseMaxMemory(v['max-memory']);
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

  const deliver = parseDeliveryFlags(v);
  if (v.model !== undefined && detectModelPath(resolve(v.model)) !== 'onnx-folder') {
    await editCheckpoint(v, { pairs, lambda, augmentations, device, threads, outDir, deliver });
    return;
  }
  if (v.tokenizer !== undefined)
    throw new UsageError('--tokenizer is for a single-file checkpoint --model (an ONNX folder has its own tokenizer/)');
  const pipeline = await loadPipeline(v.model, { device, threads });
  try {
    const ctx = await openEditContext(pipeline);
    const chosenLayers = v.layers === undefined ? undefined : layersFlag(ctx.map, v.layers);
    const editMode = v['only-v'] === true ? 'v' : v['only-k'] === true ? 'k' : 'kv';
    const t0 = performance.now();
    const computed = await computeModelEdit(ctx, {
      pairs,
      lambda,
      augmentations,
      mode: editMode,
      preserve: v.preserve ?? [],
      ...(chosenLayers !== undefined ? { layers: chosenLayers } : {}),
    });
    const solveMs = performance.now() - t0;
    for (const w of computed.warnings) console.error(`time-edit: warning: ${w}`);
    let edit: Edit = computed.edit;
    if (v.on !== undefined) edit = chainEdits(await loadEditFor(ctx, v.on), edit);
    makeDirectory(outDir);
    const editPath = join(outDir, 'edit.safetensors');
    saveEdit(editPath, edit);
    const layers = describeCrossAttention(ctx.map);
    const projections = editMode === 'v' ? 'V' : editMode === 'k' ? 'K' : 'K and V';
    if (v.json !== true) {
      const which = chosenLayers === undefined ? `${ctx.map.layers.length}` : `${chosenLayers.length} of the ${ctx.map.layers.length}`;
      console.error(
        `edited the ${projections} projections of ${which} cross-attention layers (d = ${ctx.map.d}, ${computed.edit.steps[0]!.rows} rows, λ = ${lambda}):`,
      );
      for (const [i, l] of layers.entries()) if (chosenLayers === undefined || chosenLayers.includes(i)) console.error(`  ${l}`);
      console.error(`wrote ${editPath}`);
    }
    // Before the grid: a LoRA the graph's names cannot give fails in seconds, not after sampling.
    const delivered = await deliverEdit(deliver, edit, { kind: 'onnx', ctx, resolution: pipeline.defaultSize }, v.json === true);
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
        ...(maxMemoryBytes !== undefined ? { maxMemoryBytes } : {}),
      };
      const refusal = (err: unknown): never => {
        throw inTermsOfMemoryFlag(err);
      };
      // The before images set the pipeline's attention slicing to the memory plan's, which the edited copy keeps.
      const before = await generate(pipeline, { ...base, onProgress: bar('before') }).catch(refusal);
      const edited = await prepareEditedGeneration(ctx, edit, mode);
      let after;
      try {
        after = await generate(edited.pipeline, await edited.options({ ...base, onProgress: bar('after ') })).catch(refusal);
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
            ...delivered,
            pairs,
            lambda,
            augmentations,
            onlyV: v['only-v'] === true,
            ...(v['only-k'] === true ? { onlyK: true } : {}),
            ...(chosenLayers !== undefined ? { editedLayers: chosenLayers } : {}),
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

/** Flags that need sampling, refused with a checkpoint --model (which is read, not sampled). */
const GRID_FLAGS = [
  'prompt',
  'seeds',
  'grid-scale',
  'mode',
  'steps',
  'guidance',
  'scheduler',
  'height',
  'width',
  'images-per-call',
  'max-memory',
  'export',
];

/**
 * `edit --model CHECKPOINT`: the edit solved from the checkpoint's own text encoder (run from its weights) and
 * saved as an edit file, plus what --lora/--save-checkpoint/--save-model ask for. No grid: sampling needs an ONNX
 * folder. Prints where the time went (reading, text encoding, solving) and the peak memory.
 */
async function editCheckpoint(
  v: Record<string, unknown> & { model?: string; tokenizer?: string; layers?: string; on?: string; json?: boolean; preserve?: string[] },
  o: {
    pairs: { source: string; destination: string }[];
    lambda: number;
    augmentations: string[];
    device: ReturnType<typeof parseDevice>;
    threads: number | undefined;
    outDir: string;
    deliver: DeliveryFlags;
  },
): Promise<void> {
  const refused = GRID_FLAGS.filter((f) => v[f] !== undefined);
  if (refused.length > 0)
    throw new UsageError(
      `${refused.map((f) => `--${f}`).join(', ')} need sampling, which needs an ONNX pipeline folder; --model ${v.model} is a checkpoint (edit file, --lora, --save-checkpoint, --save-model only)`,
    );
  const t0 = performance.now();
  let ctx: CheckpointEditContext;
  try {
    ctx = await openCheckpointEditContext(resolve(v.model!), {
      ...(o.device !== undefined ? { device: o.device } : {}),
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      ...(v.tokenizer !== undefined ? { tokenizer: resolve(v.tokenizer) } : {}),
    });
  } catch (err) {
    throw inTermsOfFlags(err, { tokenizer: '--tokenizer' });
  }
  try {
    const chosenLayers = v.layers === undefined ? undefined : layersFlag(ctx.map, v.layers);
    const editMode = v['only-v'] === true ? 'v' : v['only-k'] === true ? 'k' : 'kv';
    let encodeMs = 0;
    const timed: CheckpointEditContext = {
      ...ctx,
      pipeline: {
        ...ctx.pipeline,
        async encodePrompts(prompts) {
          const te = performance.now();
          try {
            return await ctx.pipeline.encodePrompts(prompts);
          } finally {
            encodeMs += performance.now() - te;
          }
        },
      },
    };
    const t1 = performance.now();
    const computed = await computeModelEdit(timed, {
      pairs: o.pairs,
      lambda: o.lambda,
      augmentations: o.augmentations,
      mode: editMode,
      preserve: v.preserve ?? [],
      ...(chosenLayers !== undefined ? { layers: chosenLayers } : {}),
    });
    const solveMs = performance.now() - t1 - encodeMs;
    for (const w of computed.warnings) console.error(`time-edit: warning: ${w}`);
    let edit: Edit = computed.edit;
    if (v.on !== undefined) edit = chainEdits(await loadEditFor(ctx, v.on), edit);
    // The text encoder is done with: its session (the encoder's fp32 weights, mapped) is released before the LoRA or
    // merged checkpoint is written, so their K/V work does not add to its memory (docs/checkpoints.md).
    await ctx.pipeline.close();
    makeDirectory(o.outDir);
    const editPath = join(o.outDir, 'edit.safetensors');
    saveEdit(editPath, edit);
    const json = v.json === true;
    if (!json) {
      console.error(
        `edited the ${editMode === 'v' ? 'V' : editMode === 'k' ? 'K' : 'K and V'} projections of ${chosenLayers?.length ?? ctx.map.layers.length} cross-attention layers of ${ctx.checkpoint.path} (${ctx.kind}, d = ${ctx.map.d}, ${computed.edit.steps[0]!.rows} rows, λ = ${o.lambda})`,
      );
      console.error(`wrote ${editPath} (no before/after grid: sampling needs an ONNX pipeline folder)`);
    }
    const t2 = performance.now();
    const delivered = await deliverEdit(
      o.deliver,
      edit,
      { kind: 'checkpoint', checkpoint: ctx.checkpoint, fingerprint: ctx.fingerprint, resolution: 512 },
      json,
    );
    const t = ctx.timings;
    const timings = {
      readMs: Math.round(t.headerMs + t.textReadMs + t.kvReadMs),
      textEncoderLoadMs: Math.round(t.textLoadMs),
      textEncodingMs: Math.round(encodeMs),
      solveMs: Math.round(solveMs),
      writeMs: Math.round(performance.now() - t2),
      totalMs: Math.round(performance.now() - t0),
      // resourceUsage().maxRSS is in KiB and covers the onnxruntime worker thread too (one process)
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    };
    if (!json)
      console.error(
        `time: reading ${timings.readMs} ms (headers, text encoder as fp32, K/V), text encoder session ${timings.textEncoderLoadMs} ms, ` +
          `text encoding ${timings.textEncodingMs} ms, solving ${timings.solveMs} ms, writing ${timings.writeMs} ms; peak RSS ${timings.peakRssMb} MB`,
      );
    else
      console.log(
        JSON.stringify(
          {
            edit: editPath,
            grid: null,
            export: null,
            ...delivered,
            model: { kind: ctx.kind, path: ctx.checkpoint.path, files: ctx.checkpoint.files.map((f) => f.path) },
            pairs: o.pairs,
            lambda: o.lambda,
            augmentations: o.augmentations,
            onlyV: v['only-v'] === true,
            ...(v['only-k'] === true ? { onlyK: true } : {}),
            ...(chosenLayers !== undefined ? { editedLayers: chosenLayers } : {}),
            layers: ctx.map.layers.map((l) => ({ index: l.index, name: l.name, width: l.width, k: l.k.initializer, v: l.v.initializer })),
            rows: computed.edit.steps[0]!.rows,
            solveMs: timings.solveMs,
            timings,
            fingerprint: ctx.fingerprint,
            warnings: computed.warnings,
          },
          null,
          2,
        ),
      );
  } finally {
    await ctx.pipeline.close();
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

/** What `--lora`, `--rank`, `--lora-truncation`, `--save-checkpoint` and `--save-model` ask for, checked before any model loads. */
interface DeliveryFlags {
  lora?: string;
  rank?: number;
  truncation: LoraTruncation;
  saveCheckpoint?: string;
  saveModel?: string;
}

function parseDeliveryFlags(v: {
  model?: string;
  lora?: string;
  rank?: string;
  'lora-truncation'?: string;
  'save-checkpoint'?: string;
  'save-model'?: string;
}): DeliveryFlags {
  if (v.rank !== undefined && v.lora === undefined) throw new UsageError('--rank needs --lora FILE');
  if (v['lora-truncation'] !== undefined && v.lora === undefined) throw new UsageError('--lora-truncation needs --lora FILE');
  const truncation = (v['lora-truncation'] ?? 'per-matrix') as LoraTruncation;
  if (!LORA_TRUNCATIONS.includes(truncation))
    throw new UsageError(`--lora-truncation must be ${LORA_TRUNCATIONS.join(' or ')}, got '${v['lora-truncation']}'`);
  const rank = v.rank === undefined ? undefined : parsePositiveInt(v.rank, '--rank', 1);
  const kind = v.model === undefined ? 'onnx-folder' : detectModelPath(resolve(v.model));
  if (v['save-checkpoint'] !== undefined && kind !== 'single-file')
    throw new UsageError(
      `--save-checkpoint needs --model a single .safetensors checkpoint (this model is ${kind === 'diffusers' ? 'a diffusers folder: use --save-model DIR' : 'an ONNX folder: use --export DIR'})`,
    );
  if (v['save-model'] !== undefined && kind !== 'diffusers')
    throw new UsageError(
      `--save-model needs --model a diffusers folder (this model is ${kind === 'single-file' ? 'a single file: use --save-checkpoint FILE' : 'an ONNX folder: use --export DIR'})`,
    );
  for (const [flag, path] of [
    ['--lora', v.lora],
    ['--save-checkpoint', v['save-checkpoint']],
  ] as const)
    if (path !== undefined && v.model !== undefined && resolve(path) === resolve(v.model))
      throw new UsageError(`${flag} ${path} is the --model file itself: give another path`);
  return {
    truncation,
    ...(v.lora !== undefined ? { lora: resolve(v.lora) } : {}),
    ...(rank !== undefined ? { rank } : {}),
    ...(v['save-checkpoint'] !== undefined ? { saveCheckpoint: resolve(v['save-checkpoint']) } : {}),
    ...(v['save-model'] !== undefined ? { saveModel: resolve(v['save-model']) } : {}),
  };
}

/** The model an edit was computed on, for writing it out: an ONNX folder's edit context, or an opened checkpoint. */
type DeliverySource =
  | { kind: 'onnx'; ctx: EditContext; resolution: number }
  | { kind: 'checkpoint'; checkpoint: Checkpoint; fingerprint: string; resolution: number };

/**
 * Writes the LoRA, merged checkpoint and diffusers folder the flags ask for; returns what was written, for --json.
 * `resolution` is the model's native image size (the LoRA's modelspec.resolution).
 */
async function deliverEdit(
  flags: DeliveryFlags,
  edit: Edit,
  source: DeliverySource,
  json: boolean,
): Promise<{
  lora?: { path: string; rank: number; exactRank: number; truncation: string };
  savedCheckpoint?: string;
  savedModel?: string;
}> {
  const out: Awaited<ReturnType<typeof deliverEdit>> = {};
  if (flags.lora !== undefined) {
    const weights = source.kind === 'onnx' ? kvWeightsOfOnnx(source.ctx.unet, source.ctx.map) : kvWeightsOfCheckpoint(source.checkpoint);
    const fingerprint = source.kind === 'onnx' ? source.ctx.fingerprint : source.fingerprint;
    const factors = await factorEdit(weights, edit, {
      ...(flags.rank !== undefined ? { rank: flags.rank } : {}),
      truncation: flags.truncation,
    });
    saveLora(flags.lora, factors, edit, { fingerprint, resolution: source.resolution });
    const truncated = factors.rank < factors.exactRank;
    out.lora = { path: flags.lora, rank: factors.rank, exactRank: factors.exactRank, truncation: truncated ? factors.truncation : 'none' };
    if (!json)
      console.error(
        `wrote ${flags.lora} (kohya LoRA, ${factors.modules.length} modules, rank ${factors.rank} of ${factors.exactRank}: ` +
          `${truncated ? `${factors.truncation} truncation` : 'exact'})`,
      );
  }
  if (flags.saveCheckpoint !== undefined || flags.saveModel !== undefined) {
    if (source.kind !== 'checkpoint') throw new UsageError('--save-checkpoint and --save-model need a safetensors --model');
    if (flags.saveCheckpoint !== undefined) {
      await writeMergedCheckpoint(source.checkpoint, edit, flags.saveCheckpoint, { fingerprint: source.fingerprint });
      out.savedCheckpoint = flags.saveCheckpoint;
      if (!json) console.error(`wrote ${flags.saveCheckpoint} (the checkpoint with its 32 K/V weights edited)`);
    }
    if (flags.saveModel !== undefined) {
      await writeEditedDiffusersFolder(source.checkpoint, edit, flags.saveModel, { fingerprint: source.fingerprint });
      out.savedModel = flags.saveModel;
      if (!json) console.error(`wrote ${flags.saveModel} (the diffusers folder with its UNet's K/V weights edited)`);
    }
  }
  return out;
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

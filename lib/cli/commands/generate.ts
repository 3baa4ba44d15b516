// `time-edit generate`: prompts × seeds → PNG files (or one grid PNG), with the embedded model by default.
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { makeGrid } from '../../image/grid.js';
import { encodePng, writePng } from '../../image/png.js';
import { writeFilesAtomic } from '../../fs/durable-file.js';
import { loadPipeline } from '../../model/pipeline.js';
import { applyMemoryPlan, generate, type GeneratedImage, type GenerateOptions } from '../../sample/generate.js';
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
import { makeDirectory } from '../../fs/make-directory.js';
import { promptSlug } from '../../fs/file-name.js';
import { progressBar } from '../progress.js';

/** This command's flags for the GenerateOptions it sets, so that the library's messages name the flag. */
export const optionFlags = {
  ...SAMPLING_OPTION_FLAGS,
  height: '--height',
  width: '--width',
  batchSize: '--batch',
  attentionSlices: '--attention-slices',
  maxMemoryBytes: '--max-memory',
};

export const summary = 'text-to-image: prompts × seeds → PNG files (embedded model, or --model an SD 1.x ONNX folder)';

const usage = `usage: time-edit generate PROMPT… [options]

  --model PATH            SD 1.x ONNX pipeline folder (default: the embedded toy-shapes model)
  --seeds LIST            seeds, e.g. 0-7 or 1,5,9 or 0-3,10 (default 0); --seed N for one
  --steps N               scheduler steps (default 50; PNDM makes N+1 UNet calls)
  --guidance G            classifier-free guidance scale (default 7.5; ≤ 1 disables the unconditional branch)
  --negative-prompt TEXT  unconditional prompt (default: the empty prompt)
  --scheduler NAME        ${schedulerNames.join(' | ')} (default: the model's scheduler_config.json)
  --height H --width W    image size in pixels, multiples of the VAE factor (default: the model's native size)
  --batch N               images per UNet call (default: the memory plan's, at most 8; 2N rows with guidance)
  --max-memory GB         memory budget the run is planned for: images per call and attention slicing are
                          chosen to fit, and a run that cannot fit is refused before it starts (default: 75% of
                          this machine's memory, or what is available now if less; docs/memory.md)
  --attention-slices N    compute each self-attention over N slices of its queries, 1…64 (default: the plan's)
  --out DIR               output folder (default: out), created if missing
  --grid                  write one grid.png instead of one file per image: row = prompt, column = seed
  --json                  print what was written as JSON on stdout
  --device cpu|cuda       execution provider (default cpu)
  --threads N             onnxruntime threads per session
  --edit FILE             sample with a TIME edit file (made by \`time-edit edit\` for this model), or a LoRA
                          made by \`time-edit edit --lora\` for it
  --edit-mode MODE        embedding (default: E·Mᵀ conditioning) or weights (patched K/V weights)
  --queue URL             workers ("time-edit worker") compute the images, over Redis (redis://[:password@]host:port,
                          rediss:// for TLS, env: $TIME_EDIT_REDIS_URL; docs/queue.md); not with --edit

Files are named NN-<prompt>-seed<S>.png (NN = prompt index). Nothing is written unless every image succeeds.
example: time-edit generate "a circle" --seeds 0-7 --out out/`;

/** A run refused by its memory plan, in terms of --max-memory. */
function memoryRefusal(err: unknown): never {
  throw inTermsOfMemoryFlag(err);
}

/** The file name of an image in `generate`'s output folder (the prompt cut to 60 characters). */
export function imageFileName(img: Pick<GeneratedImage, 'prompt' | 'promptIndex' | 'seed'>): string {
  return `${String(img.promptIndex).padStart(2, '0')}-${promptSlug(img.prompt, 60)}-seed${img.seed}.png`;
}

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      allowPositionals: true,
      options: {
        model: { type: 'string' },
        seeds: { type: 'string' },
        seed: { type: 'string' },
        steps: { type: 'string' },
        guidance: { type: 'string' },
        'negative-prompt': { type: 'string' },
        scheduler: { type: 'string' },
        height: { type: 'string' },
        width: { type: 'string' },
        batch: { type: 'string' },
        out: { type: 'string' },
        grid: { type: 'boolean' },
        json: { type: 'boolean' },
        device: { type: 'string' },
        threads: { type: 'string' },
        edit: { type: 'string' },
        'edit-mode': { type: 'string' },
        'max-memory': { type: 'string' },
        'attention-slices': { type: 'string' },
        queue: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const { values: v, positionals: prompts } = parsed;
  if (helpRequested(v, usage)) return;
  // Every flag is checked before the model loads, so bad input costs nothing and writes nothing.
  if (prompts.length === 0) throw new UsageError(`no prompts given\n${usage}`);
  if (v.seeds !== undefined && v.seed !== undefined) throw new UsageError('give --seeds or --seed, not both');
  const seeds = v.seed !== undefined ? parseSeeds(v.seed, '--seed') : parseSeeds(v.seeds ?? '0');
  const steps = parsePositiveInt(v.steps, '--steps', 50);
  const guidance = parseNumber(v.guidance, '--guidance', 7.5, 0);
  const scheduler = parseScheduler(v.scheduler);
  const batchSize = v.batch === undefined ? undefined : parsePositiveInt(v.batch, '--batch', 8);
  const maxMemoryBytes = parseMaxMemory(v['max-memory']);
  const attentionSlices =
    v['attention-slices'] === undefined ? undefined : parsePositiveInt(v['attention-slices'], '--attention-slices', 1);
  const device = parseDevice(v.device);
  const threads = v.threads === undefined ? undefined : parsePositiveInt(v.threads, '--threads', 1);
  const heightFlag = v.height === undefined ? undefined : parsePositiveInt(v.height, '--height', 1);
  const widthFlag = v.width === undefined ? undefined : parsePositiveInt(v.width, '--width', 1);
  const editMode = v['edit-mode'] ?? 'embedding';
  if (editMode !== 'embedding' && editMode !== 'weights')
    throw new UsageError(`--edit-mode must be embedding or weights, got '${editMode}'`);
  if (v['edit-mode'] !== undefined && v.edit === undefined) throw new UsageError('--edit-mode needs --edit FILE');
  if (v.queue !== undefined && v.edit !== undefined)
    throw new UsageError('--edit cannot be combined with --queue (workers are sent no edit files)');
  const outDir = resolve(v.out ?? 'out');
  try {
    if (!(await stat(outDir)).isDirectory()) throw new UsageError(`--out ${outDir} exists and is not a folder`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
  }

  const pipeline = await loadPipeline(v.model, { device, threads });
  const memory = {
    ...(batchSize !== undefined ? { batchSize } : {}),
    ...(maxMemoryBytes !== undefined ? { maxMemoryBytes } : {}),
    ...(attentionSlices !== undefined ? { attentionSlices } : {}),
  };
  // Hook for TIME edits (lib/edit/context.ts): an edited pipeline and options carrying the edit. The memory plan
  // is applied first: the edited UNet copy keeps the attention slicing it is created with.
  const edited =
    v.edit === undefined
      ? undefined
      : await applyMemoryPlan(pipeline, {
          prompts,
          seeds,
          steps,
          guidance,
          height: heightFlag ?? pipeline.defaultSize,
          width: widthFlag ?? pipeline.defaultSize,
          ...memory,
        })
          .then(() => import('../../edit/context.js'))
          .then((m) => m.prepareEditFile(pipeline, resolve(v.edit!), editMode))
          .catch(async (err: unknown) => {
            await pipeline.close();
            memoryRefusal(err);
          });
  try {
    const height = heightFlag ?? pipeline.defaultSize;
    const width = widthFlag ?? pipeline.defaultSize;
    prompts.forEach((p, i) => {
      if (pipeline.tokenizer.encode(p).truncated)
        console.error(
          `time-edit: warning: prompt ${i + 1} has more than ${pipeline.tokenizer.maxLength - 2} tokens and was truncated (as SD does)`,
        );
    });
    const negative = v['negative-prompt'];
    if (negative !== undefined && pipeline.tokenizer.encode(negative).truncated)
      console.error(
        `time-edit: warning: the negative prompt has more than ${pipeline.tokenizer.maxLength - 2} tokens and was truncated (as SD does)`,
      );
    const tty = process.stderr.isTTY === true;
    const t0 = performance.now();
    const genOptions: GenerateOptions = {
      prompts,
      seeds,
      steps,
      guidance,
      height,
      width,
      scheduler,
      ...memory,
      ...(v['negative-prompt'] !== undefined ? { negativePrompt: v['negative-prompt'] } : {}),
      onProgress: progressBar('UNet calls', { rate: true }),
    };
    const queued =
      v.queue === undefined
        ? undefined
        : await import('./queue.js').then((m) => m.generateThroughQueue(v.queue!, pipeline, genOptions, outDir));
    const images =
      queued !== undefined
        ? queued.images
        : edited === undefined
          ? await generate(pipeline, genOptions).catch(memoryRefusal)
          : await generate(edited.pipeline, await edited.options(genOptions)).catch(memoryRefusal);
    const seconds = (performance.now() - t0) / 1000;
    const meta: Record<string, string> = {
      Software: 'time-edit generate',
      model: pipeline.dir,
      steps: String(steps),
      guidance: String(guidance),
      scheduler: scheduler ?? String(pipeline.schedulerConfig._class_name ?? 'PNDMScheduler'),
      size: `${width}x${height}`,
      ...(v['negative-prompt'] !== undefined ? { negative_prompt: v['negative-prompt'] } : {}),
      ...(v.edit !== undefined ? { edit: resolve(v.edit), edit_mode: editMode } : {}),
    };
    makeDirectory(outDir);
    const written: { path: string; prompt: string; seed: number }[] = [];
    let grid: string | null = null;
    if (v.grid === true) {
      grid = join(outDir, 'grid.png');
      await writePng(grid, makeGrid(images, seeds.length), {
        ...meta,
        order: 'rows: prompts in the order given; columns: seeds in the order given',
        prompts: JSON.stringify(prompts),
        seeds: JSON.stringify(seeds),
      });
    } else {
      // All or nothing (as the usage says): every PNG is staged under a temporary name and only then are all
      // renamed into place; a failure (a full disk) removes the staged ones and any already renamed.
      const files = images.map((img) => ({ img, path: join(outDir, imageFileName(img)) }));
      await writeFilesAtomic(
        files.map(({ img, path }) => ({ path, data: encodePng(img, { ...meta, prompt: img.prompt, seed: String(img.seed) }) })),
      );
      for (const { img, path } of files) written.push({ path, prompt: img.prompt, seed: img.seed });
    }
    await queued?.release(); // the images are on disk: their jobs and results leave Redis
    if (v.json === true) {
      const order = grid !== null ? { rows: 'prompts in the order given', columns: 'seeds in the order given', prompts, seeds } : undefined;
      console.log(
        JSON.stringify({ model: pipeline.dir, images: written, grid, gridOrder: order, width, height, steps, guidance, seconds }, null, 2),
      );
    } else if (tty || grid !== null) {
      console.error(
        grid !== null
          ? `wrote ${grid} (${prompts.length} rows × ${seeds.length} columns: prompt × seed)`
          : `wrote ${written.length} images to ${outDir}`,
      );
    }
  } finally {
    await edited?.close();
    await pipeline.close();
  }
}

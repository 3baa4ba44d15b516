// The jobs this tool puts on a queue, and the check every worker makes before it runs one. A payload is untrusted
// input: anyone who can write to the Redis server can add a job. So a worker accepts only the exact shapes below (no
// field more, none less), with the same bounds as the command line (lib/cli/sampling-flags.ts FLAG_LIMITS: steps,
// guidance, λ, seeds, images per call) and the library's own checks run again before any work (validateGenerateOptions,
// parseBatchLine). No payload field is a path: a worker opens only the model folders it was started with and a
// temporary folder of its own. A payload that fails is failed with the reason (PayloadError) and never executed.
import { createHash } from 'node:crypto';
import type { BatchDefaults, BatchLine } from '../edit/batch.js';
import type { TimedEntry } from '../eval/timed-csv.js';
import { checkSeed } from '../sample/noise.js';
import { parseSchedulerName, type SchedulerName } from '../sample/schedulers.js';
import { PayloadError } from './queue-error.js';

/** The payload format this version writes and reads. */
export const PAYLOAD_FORMAT = 1;

/** Bounds of a payload (a job is small: one chunk of batch lines, one prompt's seeds, one TIMED entry). */
export const PAYLOAD_LIMITS = {
  lines: 4096,
  lineChars: 100_000,
  promptChars: 10_000,
  seeds: 1024,
  steps: 10_000,
  guidance: 1000,
  lambda: 1_000_000,
  batchSize: 1024,
  side: 16_384,
  augmentations: 256,
} as const;

/** A chunk of `edit --batch` lines, computed with one encode pass and one batched solve. */
export interface BatchJob {
  kind: 'batch';
  format: number;
  fingerprint: string;
  defaults: BatchDefaults;
  lines: BatchLine[];
}

/** One prompt's images for a chunk of seeds (`generate`). */
export interface GenerateJob {
  kind: 'generate';
  format: number;
  fingerprint: string;
  prompt: string;
  seeds: number[];
  steps: number;
  guidance: number;
  height: number;
  width: number;
  batchSize: number;
  scheduler?: SchedulerName;
  negativePrompt?: string;
}

/** One TIMED entry: its edit, the baseline, edited and oracle images, and their judgement (`eval timed`). */
export interface TimedJob {
  kind: 'timed';
  format: number;
  fingerprint: string;
  entry: TimedEntry;
  seeds: number[];
  steps: number;
  guidance: number;
  lambda: number;
  augmentations: string[];
  onlyV: boolean;
  mode: 'embedding' | 'weights';
  keepUncond: boolean;
  batchSize: number;
  /** edit the K projections only (absent: not) */
  onlyK?: boolean;
  /** the cross-attention layers to edit (absent: all) */
  layers?: number[];
  /** preservation prompts (absent: none) */
  preserve?: string[];
}

export type JobData = BatchJob | GenerateJob | TimedJob;

type Obj = Record<string, unknown>;

function fail(message: string): never {
  throw new PayloadError(`refused job payload: ${message}`);
}

function object(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${what} must be a JSON object`);
  return v as Obj;
}

/** Refuses any field outside `required` ∪ `optional`, and any missing required one. */
function fields(o: Obj, what: string, required: readonly string[], optional: readonly string[] = []): void {
  for (const k of Object.keys(o))
    if (!required.includes(k) && !optional.includes(k)) fail(`unexpected field '${k}' in ${what} (a job names no files or models)`);
  for (const k of required) if (!(k in o)) fail(`${what} has no field '${k}'`);
}

function text(v: unknown, what: string, max: number = PAYLOAD_LIMITS.promptChars, allowEmpty = true): string {
  if (typeof v !== 'string') fail(`${what} must be a string`);
  if (v.length > max) fail(`${what} is longer than ${max} characters`);
  if (!allowEmpty && v.trim() === '') fail(`${what} must not be empty`);
  return v;
}

function integer(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(`${what} must be an integer in [${min}, ${max}]`);
  return v;
}

function number(v: unknown, what: string, min: number, max: number, minExclusive = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v > max || (minExclusive ? v <= min : v < min))
    fail(`${what} must be a number in ${minExclusive ? '(' : '['}${min}, ${max}]`);
  return v;
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') fail(`${what} must be true or false`);
  return v;
}

function strings(v: unknown, what: string, max: number): string[] {
  if (!Array.isArray(v) || v.length > max) fail(`${what} must be a list of at most ${max} strings`);
  return v.map((s, i) => text(s, `${what}[${i}]`));
}

function seedList(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > PAYLOAD_LIMITS.seeds)
    fail(`${what} must be a list of 1 to ${PAYLOAD_LIMITS.seeds} seeds`);
  return v.map((s, i) => {
    try {
      checkSeed(s as number);
    } catch {
      fail(`${what}[${i}] must be an integer in [0, 2^53)`);
    }
    return s as number;
  });
}

function fingerprint(v: unknown, served: string): string {
  if (typeof v !== 'string' || !/^[0-9a-f]{64}$/.test(v)) fail("'fingerprint' must be a model fingerprint (64 hex digits)");
  if (v !== served) fail(`the job is for model ${v.slice(0, 16)}…, this queue's worker serves ${served.slice(0, 16)}…`);
  return v;
}

function batchDefaults(v: unknown): BatchDefaults {
  const o = object(v, "'defaults'");
  fields(o, "'defaults'", [], ['lambda', 'onlyV', 'augmentations', 'preserve']);
  const out: BatchDefaults = {};
  if (o.lambda !== undefined) out.lambda = number(o.lambda, "'defaults.lambda'", 0, PAYLOAD_LIMITS.lambda, true);
  if (o.onlyV !== undefined) out.onlyV = bool(o.onlyV, "'defaults.onlyV'");
  if (o.augmentations !== undefined) out.augmentations = strings(o.augmentations, "'defaults.augmentations'", PAYLOAD_LIMITS.augmentations);
  if (o.preserve !== undefined) out.preserve = strings(o.preserve, "'defaults.preserve'", PAYLOAD_LIMITS.augmentations);
  return out;
}

function batchJob(o: Obj, served: string): BatchJob {
  fields(o, 'a batch job', ['kind', 'format', 'fingerprint', 'defaults', 'lines']);
  if (!Array.isArray(o.lines) || o.lines.length === 0 || o.lines.length > PAYLOAD_LIMITS.lines)
    fail(`'lines' must be a list of 1 to ${PAYLOAD_LIMITS.lines} lines`);
  const seen = new Set<number>();
  const lines = o.lines.map((l, i) => {
    const lo = object(l, `'lines[${i}]'`);
    fields(lo, `'lines[${i}]'`, ['line', 'text']);
    const line = integer(lo.line, `'lines[${i}].line'`, 1, Number.MAX_SAFE_INTEGER);
    if (seen.has(line)) fail(`line ${line} appears twice`);
    seen.add(line);
    return { line, text: text(lo.text, `'lines[${i}].text'`, PAYLOAD_LIMITS.lineChars) };
  });
  return {
    kind: 'batch',
    format: PAYLOAD_FORMAT,
    fingerprint: fingerprint(o.fingerprint, served),
    defaults: batchDefaults(o.defaults),
    lines,
  };
}

function sampling(o: Obj): { steps: number; guidance: number; batchSize: number } {
  return {
    steps: integer(o.steps, "'steps'", 1, PAYLOAD_LIMITS.steps),
    guidance: number(o.guidance, "'guidance'", 0, PAYLOAD_LIMITS.guidance),
    batchSize: integer(o.batchSize, "'batchSize'", 1, PAYLOAD_LIMITS.batchSize),
  };
}

function generateJob(o: Obj, served: string): GenerateJob {
  fields(
    o,
    'a generate job',
    ['kind', 'format', 'fingerprint', 'prompt', 'seeds', 'steps', 'guidance', 'height', 'width', 'batchSize'],
    ['scheduler', 'negativePrompt'],
  );
  const job: GenerateJob = {
    kind: 'generate',
    format: PAYLOAD_FORMAT,
    fingerprint: fingerprint(o.fingerprint, served),
    prompt: text(o.prompt, "'prompt'"),
    seeds: seedList(o.seeds, "'seeds'"),
    ...sampling(o),
    height: integer(o.height, "'height'", 1, PAYLOAD_LIMITS.side),
    width: integer(o.width, "'width'", 1, PAYLOAD_LIMITS.side),
  };
  if (o.scheduler !== undefined) {
    try {
      job.scheduler = parseSchedulerName(text(o.scheduler, "'scheduler'", 64));
    } catch (err) {
      fail(`'scheduler': ${(err as Error).message}`);
    }
  }
  if (o.negativePrompt !== undefined) job.negativePrompt = text(o.negativePrompt, "'negativePrompt'");
  return job;
}

function promptPairs(v: unknown, what: string): { test: string; gt: string }[] {
  if (!Array.isArray(v) || v.length !== 5) fail(`${what} must be a list of 5 {test, gt} pairs`);
  return v.map((p, i) => {
    const po = object(p, `${what}[${i}]`);
    fields(po, `${what}[${i}]`, ['test', 'gt']);
    return {
      test: text(po.test, `${what}[${i}].test`, PAYLOAD_LIMITS.promptChars, false),
      gt: text(po.gt, `${what}[${i}].gt`, PAYLOAD_LIMITS.promptChars, false),
    };
  });
}

function timedEntry(v: unknown): TimedEntry {
  const o = object(v, "'entry'");
  fields(o, "'entry'", ['index', 'old', 'new', 'positives', 'negatives']);
  return {
    index: integer(o.index, "'entry.index'", 0, 1_000_000_000),
    old: text(o.old, "'entry.old'", PAYLOAD_LIMITS.promptChars, false),
    new: text(o.new, "'entry.new'", PAYLOAD_LIMITS.promptChars, false),
    positives: promptPairs(o.positives, "'entry.positives'"),
    negatives: promptPairs(o.negatives, "'entry.negatives'"),
  };
}

function timedJob(o: Obj, served: string): TimedJob {
  fields(
    o,
    'a timed job',
    [
      'kind',
      'format',
      'fingerprint',
      'entry',
      'seeds',
      'steps',
      'guidance',
      'lambda',
      'augmentations',
      'onlyV',
      'mode',
      'keepUncond',
      'batchSize',
    ],
    ['onlyK', 'layers', 'preserve'],
  );
  if (o.mode !== 'embedding' && o.mode !== 'weights') fail("'mode' must be 'embedding' or 'weights'");
  const keepUncond = bool(o.keepUncond, "'keepUncond'");
  if (keepUncond && o.mode !== 'embedding') fail("'keepUncond' needs 'mode' embedding");
  const job: TimedJob = {
    kind: 'timed',
    format: PAYLOAD_FORMAT,
    fingerprint: fingerprint(o.fingerprint, served),
    entry: timedEntry(o.entry),
    seeds: seedList(o.seeds, "'seeds'"),
    ...sampling(o),
    lambda: number(o.lambda, "'lambda'", 0, PAYLOAD_LIMITS.lambda, true),
    augmentations: strings(o.augmentations, "'augmentations'", PAYLOAD_LIMITS.augmentations),
    onlyV: bool(o.onlyV, "'onlyV'"),
    mode: o.mode,
    keepUncond,
  };
  if (o.onlyK !== undefined) job.onlyK = bool(o.onlyK, "'onlyK'");
  if (job.onlyK === true && job.onlyV) fail("'onlyK' and 'onlyV' contradict each other");
  if (o.layers !== undefined) {
    if (!Array.isArray(o.layers) || o.layers.length === 0 || o.layers.length > 1024)
      fail("'layers' must be a list of 1 to 1024 layer indices");
    job.layers = o.layers.map((l, i) => integer(l, `'layers[${i}]'`, 0, 1023));
  }
  if (o.preserve !== undefined) job.preserve = strings(o.preserve, "'preserve'", PAYLOAD_LIMITS.augmentations);
  return job;
}

/**
 * Checks a job payload against the shapes above for a worker serving the model `servedFingerprint`; returns the
 * payload rebuilt from its checked fields, or throws PayloadError naming the problem.
 * Example: `validateJob(job.data, ctx.fingerprint)` → a BatchJob, GenerateJob or TimedJob.
 */
export function validateJob(data: unknown, servedFingerprint: string): JobData {
  const o = object(data, 'the payload');
  if (o.format !== PAYLOAD_FORMAT) fail(`'format' must be ${PAYLOAD_FORMAT} (the payload was written by another version)`);
  switch (o.kind) {
    case 'batch':
      return batchJob(o, servedFingerprint);
    case 'generate':
      return generateJob(o, servedFingerprint);
    case 'timed':
      return timedJob(o, servedFingerprint);
    default:
      return fail("'kind' must be 'batch', 'generate' or 'timed'");
  }
}

/**
 * The job id of a payload: its kind and a sha256 of the payload (the model's fingerprint, the settings and the item),
 * so that submitting the same work again names the same job and BullMQ adds nothing.
 * Example: `jobIdOf({ kind: 'batch', … })` → `'batch-3f…'` (40 hex digits).
 */
export function jobIdOf(data: JobData): string {
  return `${data.kind}-${createHash('sha256').update(JSON.stringify(data)).digest('hex').slice(0, 40)}`;
}

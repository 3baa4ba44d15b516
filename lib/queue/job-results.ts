// What a worker returns for each kind of job: small JSON (rows, scores, names) in BullMQ's return value, with the bytes
// of edit files and images in artifact keys of their own (lib/queue/names.ts), so that the return value, which BullMQ
// also copies into its event stream, stays small. The submitter checks a return value before it writes anything: a
// worker is trusted no more than a payload (a file name it returns must be one this tool writes, inside --out).
import type { BatchRow } from '../edit/batch.js';
import type { ModelName, Scores } from '../eval/timed.js';
import { QueueError } from './queue-error.js';

/** An `edit --batch` chunk: the failed lines' rows and the computed lines' rows with their edit files' artifacts. */
export interface BatchJobResult {
  errors: BatchRow[];
  edits: { row: BatchRow; artifact: string }[];
  solveMs: number;
  solver: string;
}

/** A `generate` job: one image per seed, as raw RGB bytes (the submitter encodes the PNG, with its own metadata). */
export interface GenerateJobResult {
  images: { seed: number; width: number; height: number; artifact: string }[];
}

/** A TIMED entry: its scores (or error) and every file it wrote, relative to the output folder. */
export interface TimedJobResult {
  result: { scores?: Record<ModelName, Scores>; error?: string; editMs?: number; seconds?: number };
  files: { path: string; artifact: string }[];
}

export type JobResult = BatchJobResult | GenerateJobResult | TimedJobResult;

function bad(what: string): never {
  throw new QueueError(`a worker returned a malformed result: ${what}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The artifact keys a return value names (for their removal), whatever its kind; [] for anything else. */
export function artifactsOf(value: unknown): string[] {
  if (!isObject(value)) return [];
  const lists = [value.edits, value.images, value.files].filter(Array.isArray) as unknown[][];
  return lists.flat().flatMap((x) => (isObject(x) && typeof x.artifact === 'string' ? [x.artifact] : []));
}

/** A batch chunk's result, checked to cover exactly `lines` (each once). */
export function checkBatchResult(value: unknown, lines: readonly number[]): BatchJobResult {
  if (!isObject(value) || !Array.isArray(value.errors) || !Array.isArray(value.edits)) bad('not a batch result');
  const want = new Set(lines);
  const seen = new Set<number>();
  const row = (r: unknown): BatchRow => {
    if (!isObject(r) || typeof r.line !== 'number' || !want.has(r.line) || seen.has(r.line)) bad('a row for a line not in the job');
    seen.add(r.line);
    if (r.status !== 'ok' && r.status !== 'error') bad('a row without status');
    return r as unknown as BatchRow;
  };
  const errors = value.errors.map(row);
  const edits = value.edits.map((e) => {
    if (!isObject(e) || typeof e.artifact !== 'string') bad('an edit without its artifact');
    return { row: row(e.row), artifact: e.artifact };
  });
  if (seen.size !== want.size) bad('rows are missing');
  return {
    errors,
    edits,
    solveMs: typeof value.solveMs === 'number' ? value.solveMs : 0,
    solver: typeof value.solver === 'string' ? value.solver : '',
  };
}

/** A generate job's result, checked to hold one image of the expected size per seed, in seed order. */
export function checkGenerateResult(value: unknown, seeds: readonly number[], width: number, height: number): GenerateJobResult {
  if (!isObject(value) || !Array.isArray(value.images) || value.images.length !== seeds.length) bad('not one image per seed');
  const images = value.images.map((im, i) => {
    if (!isObject(im) || im.seed !== seeds[i] || im.width !== width || im.height !== height || typeof im.artifact !== 'string')
      bad(`image ${i} does not match its seed and size`);
    return { seed: seeds[i]!, width, height, artifact: im.artifact };
  });
  return { images };
}

/** A relative file name a TIMED job may return: under images/, PNG, no `..`, no absolute path. */
const TIMED_FILE = /^images\/[^/\\]+\/(?:[^/\\]+\/)?[^/\\]+\.png$/;

/** A TIMED job's result, checked: scores or an error, and file names inside images/. */
export function checkTimedResult(value: unknown): TimedJobResult {
  if (!isObject(value) || !isObject(value.result) || !Array.isArray(value.files)) bad('not a TIMED result');
  const files = value.files.map((f) => {
    if (!isObject(f) || typeof f.path !== 'string' || typeof f.artifact !== 'string') bad('a file without name or artifact');
    if (!TIMED_FILE.test(f.path) || f.path.split('/').some((p) => p === '..' || p === '.'))
      bad(`the file name '${f.path}' is not one eval timed writes`);
    return { path: f.path, artifact: f.artifact };
  });
  const r = value.result;
  if (r.error === undefined && !isObject(r.scores)) bad('neither scores nor an error');
  return { result: r as TimedJobResult['result'], files };
}

// Parsing of the sampling flags shared by `generate`, `edit`, `eval` and `bench generate`, and the flags that set
// the sampling library's options (for messages that must name the flag, see lib/cli/errors.ts inTermsOfFlags).
// Every numeric flag has an upper bound (FLAG_LIMITS), so that a typo such as --steps 1000000000 is a one-line
// usage error (exit 2) naming the flag, not an allocation that exhausts memory or a crash. The bounds are far
// above any useful value; the model and the machine may refuse smaller ones (steps above the scheduler's
// num_train_timesteps, an image whose memory estimate exceeds the machine's, see lib/sample/generate.ts).
import { UsageError, type OptionFlags } from './errors.js';
import { MemoryBudgetError } from '../sample/generate.js';
import { MAX_THREADS } from '../model/pipeline.js';
import { parseSchedulerName, type SchedulerName } from '../sample/schedulers.js';

/** The most seeds one --seeds list may expand to, all ranges together. */
export const MAX_SEEDS = 100_000;

/**
 * The largest value each numeric flag accepts (a flag not listed has no bound of its own beyond its parser's).
 * --steps: far above SD's 1000 training timesteps, which the schedulers enforce per model; --height/--width/--size:
 * image sides in pixels; --batch (generate) and --images-per-call (edit's name for it, whose --batch is a file of
 * edits): images per UNet call; --threads: the library's MAX_THREADS; --seeds (a count): MAX_SEEDS.
 */
export const FLAG_LIMITS: Readonly<Record<string, number>> = {
  '--steps': 10_000,
  '--batch': 1024,
  '--images-per-call': 1024,
  '--threads': MAX_THREADS,
  '--height': 16_384,
  '--width': 16_384,
  '--size': 16_384,
  '--runs': 1000,
  '--repeats': 10_000,
  '--baseline-repeats': 10_000,
  '--grid-scale': 64,
  '--seeds': MAX_SEEDS,
  '--end': 1_000_000_000,
  '--guidance': 1000,
  '--lambda': 1_000_000,
  '--max-memory': 1_000_000,
  '--attention-slices': 64,
};

/** GenerateOptions / PipelineOptions names → the flags that set them in every command that has those flags. */
export const SAMPLING_OPTION_FLAGS: OptionFlags = { steps: '--steps', guidance: '--guidance', device: '--device', threads: '--threads' };

/**
 * "0-7" → 0…7; "1,5,9"; "0-3,10" → [0,1,2,3,10]. Seeds are integers in [0, 2^53); at most MAX_SEEDS in all.
 * Example: `parseSeeds('0-7')`.
 */
export function parseSeeds(text: string, flag = '--seeds'): number[] {
  const out: number[] = [];
  const bad = (part: string): never => {
    throw new UsageError(`${flag}: '${part}' is not a seed or a range of seeds (e.g. 0-7, 1,5,9); seeds are integers ≥ 0`);
  };
  if (text.trim() === '') bad(text);
  for (const raw of text.split(',')) {
    const part = raw.trim();
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
    if (m === null) bad(part);
    const a = Number(m![1]);
    const b = m![2] === undefined ? a : Number(m![2]);
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b)) bad(part);
    if (b < a) throw new UsageError(`${flag}: range '${part}' goes backwards`);
    if (b - a >= 100000) throw new UsageError(`${flag}: range '${part}' has more than 100000 seeds`);
    // The total is checked before the range is expanded, so 2,000 ranges of 100,000 never allocate.
    if (out.length + (b - a + 1) > MAX_SEEDS) throw new UsageError(`${flag}: more than ${MAX_SEEDS} seeds in all`);
    for (let s = a; s <= b; s++) out.push(s);
  }
  return out;
}

/**
 * A positive integer flag value, at most `max` (default: the flag's FLAG_LIMITS entry).
 * Example: `parsePositiveInt('50', '--steps', 50)` → 50; `parsePositiveInt('1000000000', '--steps', 50)` throws
 * "--steps must be at most 10000, got 1000000000".
 */
export function parsePositiveInt(
  text: string | undefined,
  flag: string,
  fallback: number,
  max = FLAG_LIMITS[flag] ?? Number.MAX_SAFE_INTEGER,
): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!/^\s*[+]?\d+\s*$/.test(text) || !Number.isSafeInteger(v) || v <= 0)
    throw new UsageError(`${flag} must be a positive integer, got '${text}'`);
  if (v > max) throw new UsageError(`${flag} must be at most ${max}, got ${v}`);
  return v;
}

/**
 * A finite number flag value, at least `min` and at most `max` (default: the flag's FLAG_LIMITS entry).
 * Example: `parseNumber('7.5', '--guidance', 7.5, 0)` → 7.5.
 */
export function parseNumber(
  text: string | undefined,
  flag: string,
  fallback: number,
  min = -Infinity,
  max = FLAG_LIMITS[flag] ?? Infinity,
): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v)) throw new UsageError(`${flag} must be a number, got '${text}'`);
  if (v < min) throw new UsageError(`${flag} must be ≥ ${min}, got ${v}`);
  if (v > max) throw new UsageError(`${flag} must be at most ${max}, got ${v}`);
  return v;
}

export function parseDevice(text: string | undefined): 'cpu' | 'cuda' {
  if (text === undefined || text === 'cpu') return 'cpu';
  if (text === 'cuda') return 'cuda';
  throw new UsageError(`--device must be cpu or cuda, got '${text}'`);
}

export function parseScheduler(text: string | undefined): SchedulerName | undefined {
  return text === undefined ? undefined : parseSchedulerName(text);
}

/**
 * --max-memory GB (decimal gigabytes, > 0) as bytes for GenerateOptions.maxMemoryBytes; undefined when not given
 * (the library's default budget, lib/sample/memory-plan.ts defaultMemoryBudget).
 * Example: `parseMaxMemory('2.5')` → 2500000000; `parseMaxMemory('0')` throws "--max-memory must be > 0 …".
 */
export function parseMaxMemory(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const gb = parseNumber(text, '--max-memory', 0, 0);
  if (!(gb > 0)) throw new UsageError(`--max-memory must be > 0 (gigabytes), got '${text}'`);
  return Math.round(gb * 1e9);
}

/**
 * A run refused by its memory plan, restated with the flag that sets the budget (the library names its option
 * maxMemoryBytes); anything else as it is. Example: `catch (err) { throw inTermsOfMemoryFlag(err) }`.
 */
export function inTermsOfMemoryFlag(err: unknown): unknown {
  if (!(err instanceof MemoryBudgetError)) return err;
  return new UsageError(err.message.replaceAll('maxMemoryBytes', '--max-memory'));
}

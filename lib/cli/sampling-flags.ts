// Parsing of the sampling flags shared by `generate`, `edit`, `eval` and `bench generate`, and the flags that set
// the sampling library's options (for messages that must name the flag, see lib/cli/errors.ts inTermsOfFlags).
import { UsageError, type OptionFlags } from './errors.js';
import { parseSchedulerName, type SchedulerName } from '../sample/schedulers.js';

/** GenerateOptions / PipelineOptions names → the flags that set them in every command that has those flags. */
export const SAMPLING_OPTION_FLAGS: OptionFlags = { steps: '--steps', guidance: '--guidance', device: '--device', threads: '--threads' };

/** "0-7" → 0…7; "1,5,9"; "0-3,10" → [0,1,2,3,10]. Seeds are integers in [0, 2^53). Example: `parseSeeds('0-7')`. */
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
    for (let s = a; s <= b; s++) out.push(s);
  }
  return out;
}

/** A positive integer flag value. */
export function parsePositiveInt(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!/^\s*[+]?\d+\s*$/.test(text) || !Number.isSafeInteger(v) || v <= 0) throw new UsageError(`${flag} must be a positive integer, got '${text}'`);
  return v;
}

/** A finite number flag value, at least `min`. */
export function parseNumber(text: string | undefined, flag: string, fallback: number, min = -Infinity): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v)) throw new UsageError(`${flag} must be a number, got '${text}'`);
  if (v < min) throw new UsageError(`${flag} must be ≥ ${min}, got ${v}`);
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

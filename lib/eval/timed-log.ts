// The run log of `eval timed`: OUT/results.jsonl. Line 1 records the run's settings (everything that changes the
// numbers); every further line is one finished entry (its scores, or its error), appended with a single write and
// an fsync as the entry finishes, after its images are on disk. A rerun with the same --out reads the log, refuses
// if the settings differ, and skips the entries already done, so an interrupted run resumes where it stopped.
// A kill can only cut the last line short: such a line is dropped (its entry is computed again); any other damage
// is reported by file and line, since it means the file was not written by this code alone.
// The file handling (header line, torn last line, durable appends, atomic rewrites) is lib/fs/run-log.ts; this file
// holds what is particular to eval timed: the settings, the entry lines and the messages.
import { FileError } from '../fs/file-error.js';
import { appendToLog, logHeaderOf, parseLogText, readLogFile, settingDifferences, writeLog, type LogText } from '../fs/run-log.js';
import type { EntryResult, ModelName, Scores, TimedOptions } from './timed.js';
import type { TimedEntry } from './timed-csv.js';
import { TimeEditError } from '../errors.js';

export const RUN_LOG_NAME = 'results.jsonl';
const LOG_KIND = 'time-edit eval timed';
const LOG_FORMAT = 1;

/** Everything that changes an eval's numbers; a resumed run must match it exactly. */
export interface TimedRunSettings extends Pick<TimedOptions, 'seeds' | 'steps' | 'guidance' | 'lambda' | 'augmentations' | 'onlyV'> {
  /** absolute path of the model folder */
  model: string;
  /** the edit fingerprint of the model (text encoder and UNet K/V weights), known once the model is loaded */
  modelFingerprint: string;
  datasetSha256: string;
  mode: string;
  keepUncond: boolean;
  /** the judge and where it came from (the CLIP folder) */
  judge: string;
  device: string;
  /** images per UNet call */
  batchSize: number;
  /** the ablations, recorded only when set (a log without them was made with K and V, all layers, no preservation) */
  onlyK?: true;
  layers?: number[];
  preserve?: string[];
}

/** How each setting is named to the user: the flag that sets it. */
const SETTING_NAMES: Record<keyof TimedRunSettings, string> = {
  model: '--model',
  modelFingerprint: '--model (the model files changed: text encoder or UNet)',
  datasetSha256: "--dataset (the file's contents, sha256)",
  seeds: '--seeds',
  steps: '--steps',
  guidance: '--guidance',
  lambda: '--lambda',
  augmentations: '--no-augment',
  onlyV: '--only-v',
  mode: '--mode',
  keepUncond: '--keep-uncond',
  judge: '--clip',
  device: '--device',
  batchSize: 'images per UNet call (set by time-edit itself)',
  onlyK: '--only-k',
  layers: '--layers',
  preserve: '--preserve',
};

export class RunLogError extends TimeEditError {
  override readonly name = 'RunLogError';
  /** 'foreign': the file is not an eval timed log at all (e.g. the results.jsonl of `edit --batch`) */
  constructor(
    message: string,
    readonly kind: 'damaged' | 'foreign' = 'damaged',
  ) {
    super(message);
  }
}

export interface RunLogContents {
  settings: Record<string, unknown>;
  /** the latest record of each entry index (an entry that failed and was retried has two) */
  results: Map<number, EntryResult>;
}

export interface ReadRunLog {
  /** undefined when there is no log yet (no file, an empty one, or only a header cut short) */
  log?: RunLogContents;
  /** 1-based number of a last line that was cut short and ignored */
  tornLine?: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isPrompt = (v: unknown): v is string => typeof v === 'string' && v !== '';

function checkEntry(v: unknown): TimedEntry {
  const pairs = (x: unknown) => Array.isArray(x) && x.length === 5 && x.every((p) => isObject(p) && isPrompt(p.test) && isPrompt(p.gt));
  if (
    !isObject(v) ||
    !Number.isSafeInteger(v.index) ||
    (v.index as number) < 0 ||
    !isPrompt(v.old) ||
    !isPrompt(v.new) ||
    !pairs(v.positives) ||
    !pairs(v.negatives)
  )
    throw new Error('"entry" is not a TIMED entry (index, old, new, 5 positives, 5 negatives)');
  return v as unknown as TimedEntry;
}

function checkScores(v: unknown): Record<ModelName, Scores> {
  const fraction = (x: unknown) => typeof x === 'number' && x >= 0 && x <= 1;
  const ok =
    isObject(v) &&
    (['baseline', 'edited', 'oracle'] as const).every((m) => {
      const s = v[m];
      return isObject(s) && fraction(s.efficacy) && fraction(s.generality) && fraction(s.specificity);
    });
  if (!ok) throw new Error('"scores" must give efficacy, generality and specificity in [0, 1] for baseline, edited and oracle');
  return v as unknown as Record<ModelName, Scores>;
}

/** One entry line back into a result; throws with what is wrong. */
function parseEntryLine(v: unknown): EntryResult {
  if (!isObject(v)) throw new Error('not a JSON object');
  const entry = checkEntry(v.entry);
  const r: EntryResult = { entry };
  if (v.error !== undefined) {
    if (typeof v.error !== 'string') throw new Error('"error" must be a string');
    r.error = v.error;
  } else r.scores = checkScores(v.scores);
  for (const k of ['editMs', 'seconds'] as const) {
    if (v[k] === undefined) continue;
    if (typeof v[k] !== 'number' || !Number.isFinite(v[k])) throw new Error(`"${k}" must be a number`);
    r[k] = v[k];
  }
  return r;
}

/** Parses a log's text; `path` names the file in errors. */
export function parseRunLog(text: string, path: string): ReadRunLog {
  return checkRunLog(parseLogText(text), path);
}

/** What an eval log holds: its recorded settings and one result per TIMED or gender-set entry, by entry index. */
export interface EntryLogContents<R> {
  settings: Record<string, unknown>;
  results: Map<number, R>;
}

/**
 * Checks a parsed eval log (`eval timed`, `eval debias`): the header names `kind` at `format` ('foreign' otherwise),
 * and every entry line parses with `parseLine`; only a torn last line is dropped. Throws RunLogError naming the line.
 * Example: `checkEntryLog(parseLogText(text), path, 'time-edit eval timed', 1, parseEntryLine)`.
 */
export function checkEntryLog<R extends { entry: { index: number } }>(
  { lines, tornLine }: LogText,
  path: string,
  kind: string,
  format: number,
  parseLine: (value: unknown) => R,
): { log?: EntryLogContents<R>; tornLine?: number } {
  if (lines.length === 0) return { tornLine };
  const [head, ...rest] = lines;
  const header = logHeaderOf(head!.value, kind);
  if (header === undefined)
    throw new RunLogError(`${path} line ${head!.no} is not the header of a '${kind}' log: this folder holds something else`, 'foreign');
  if (header.format !== format)
    throw new RunLogError(`${path} is a log of format ${String(header.format)}; this time-edit reads format ${format}`);
  const results = new Map<number, R>();
  for (const l of rest) {
    let r: R;
    try {
      if (l.error !== undefined) throw new Error(l.error);
      r = parseLine(l.value);
    } catch (err) {
      throw new RunLogError(
        `${path} line ${l.no} is damaged (${(err as Error).message}); only a last line cut short by a kill is dropped automatically`,
      );
    }
    results.set(r.entry.index, r);
  }
  return { log: { settings: header.settings, results }, tornLine };
}

/** Reads an eval log file with checkEntryLog; no file is no log, an unreadable one a RunLogError. */
export function readEntryLog<R extends { entry: { index: number } }>(
  path: string,
  kind: string,
  format: number,
  parseLine: (value: unknown) => R,
): { log?: EntryLogContents<R>; tornLine?: number } {
  let text: LogText | undefined;
  try {
    text = readLogFile(path);
  } catch (err) {
    if (err instanceof FileError) throw new RunLogError(err.message);
    throw err;
  }
  return text === undefined ? {} : checkEntryLog(text, path, kind, format, parseLine);
}

function checkRunLog(text: LogText, path: string): ReadRunLog {
  return checkEntryLog(text, path, LOG_KIND, LOG_FORMAT, parseEntryLine);
}

/**
 * True when `path` is a file whose first line is whole JSON but not an eval timed header: someone else's file, which
 * --restart must not delete.
 */
export function isForeignFile(path: string): boolean {
  try {
    readRunLog(path);
    return false;
  } catch (err) {
    return err instanceof RunLogError && err.kind === 'foreign';
  }
}

/** Reads OUT/results.jsonl; no file is no log. */
export function readRunLog(path: string): ReadRunLog {
  return readEntryLog(path, LOG_KIND, LOG_FORMAT, parseEntryLine);
}

/** A recorded setting as the settings-difference messages show it. */
export function showSetting(v: unknown): string {
  if (v === undefined) return '(not recorded)';
  if (Array.isArray(v)) return v.length === 0 ? '(none)' : v.join(',');
  return String(v);
}

/**
 * The settings that differ between a log and this run, as "--lambda was 0.1 there and is 1 now"; only the keys
 * present in `current` are compared (the model fingerprint is known only after loading the model).
 */
export function settingsDifferences(recorded: Record<string, unknown>, current: Partial<TimedRunSettings>): string[] {
  return settingDifferences(recorded, current).map(
    (d) => `${SETTING_NAMES[d.key as keyof TimedRunSettings]} was ${showSetting(d.recorded)} there and is ${showSetting(d.current)} now`,
  );
}

/** An entry as its log line stores it: the entry, its scores or its error, and its timings. */
function entryRecord(r: EntryResult): object {
  const { entry, scores, error, editMs, seconds } = r;
  return { entry, ...(error !== undefined ? { error } : { scores }), editMs, seconds };
}

/**
 * Starts the log for this run: the header and the results kept from an earlier run, written in one piece (this
 * also drops a line cut short, so that appends start on a fresh line).
 */
export function startRunLog(path: string, settings: TimedRunSettings, kept: EntryResult[]): void {
  writeLog(path, [...kept].sort((a, b) => a.entry.index - b.entry.index).map(entryRecord), { log: LOG_KIND, format: LOG_FORMAT, settings });
}

/** Appends one finished entry: one write, then fsync, so the line is whole on disk before the next entry starts. */
export function appendToRunLog(path: string, result: EntryResult): void {
  appendToLog(path, entryRecord(result));
}

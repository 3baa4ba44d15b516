// A resumable run's log: a JSON-lines file in the output folder (`edit --batch` and `eval timed` both keep one,
// results.jsonl) with one line per finished piece of work, appended with one write and an fsync as the piece
// finishes, and rewritten atomically when the run starts or ends. A log may open with a header line naming its kind,
// format and the run's settings, compared on a rerun key by key. A kill can only cut the last line short: reading
// back sets such a line aside (its work is done again); any other line that is not JSON is returned with why, for
// the user of the log to judge. What a rerun skips or redoes, and what it says, is up to that user.
import { existsSync, readFileSync } from 'node:fs';
import { appendDurably, writeFileAtomicSync } from './durable-file.js';
import { errorCode, FileError } from './file-error.js';

/** One non-blank line of a log read back: `value` when it is JSON, `error` (JSON.parse's message) when not. */
export interface LogLine {
  /** 1-based line number in the file */
  no: number;
  text: string;
  value?: unknown;
  error?: string;
}

export interface LogText {
  /** every non-blank line but a torn last one, in file order */
  lines: LogLine[];
  /** 1-based number of a last line that was cut short (not JSON) and set aside */
  tornLine?: number;
}

/** The header line's fields: what kind of log this is, its format number and the settings of the run that wrote it. */
export interface LogHeader<S> {
  log: string;
  format: number;
  settings: S;
}

/** One setting whose value differs between a log and this run. */
export interface SettingDifference {
  key: string;
  /** the value in the log (undefined: not recorded there) */
  recorded: unknown;
  current: unknown;
}

function parseLine(no: number, text: string): LogLine {
  try {
    return { no, text, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { no, text, error: (err as Error).message };
  }
}

/**
 * Splits a log's text into its lines; a last line that is not JSON is the one a kill cut short and is set aside.
 * Example: `parseLogText('{"a":1}\n{"a":')` → `{ lines: [{ no: 1, text: '{"a":1}', value: { a: 1 } }], tornLine: 2 }`.
 */
export function parseLogText(text: string): LogText {
  const lines = text
    .split('\n')
    .map((t, i) => ({ no: i + 1, text: t }))
    .filter((l) => l.text.trim() !== '')
    .map((l) => parseLine(l.no, l.text));
  const last = lines.at(-1);
  if (last === undefined || last.error === undefined) return { lines };
  lines.pop();
  return { lines, tornLine: last.no };
}

/**
 * Reads and splits the log at `path`; undefined when there is no such file; a FileError when it cannot be read.
 * Example: `const log = readLogFile('out/results.jsonl'); log?.lines.length`.
 */
export function readLogFile(path: string): LogText | undefined {
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new FileError(`cannot read ${path}: ${(err as Error).message}`, path, { code: errorCode(err), cause: err });
  }
  return parseLogText(text);
}

/**
 * A header line's fields when `value` is the header of a log of `kind`; undefined otherwise (another kind of file).
 * The format is returned as found: the caller decides which formats it reads.
 * Example: `logHeaderOf(log.lines[0]?.value, 'time-edit eval timed')?.settings`.
 */
export function logHeaderOf(value: unknown, kind: string): LogHeader<Record<string, unknown>> | undefined {
  if (!isObject(value) || value.log !== kind || !isObject(value.settings)) return undefined;
  return { log: kind, format: value.format as number, settings: value.settings };
}

/**
 * The settings in `current` whose values differ from those `recorded` in a log (compared as JSON), in the order
 * of `current`; keys absent from `current` are not compared (a value not known yet).
 * Example: `settingDifferences({ steps: 2 }, { steps: 3 })` → `[{ key: 'steps', recorded: 2, current: 3 }]`.
 */
export function settingDifferences(recorded: Record<string, unknown>, current: Record<string, unknown>): SettingDifference[] {
  const out: SettingDifference[] = [];
  for (const [key, value] of Object.entries(current)) {
    if (JSON.stringify(recorded[key]) !== JSON.stringify(value)) out.push({ key, recorded: recorded[key], current: value });
  }
  return out;
}

/** A record as the log line that stores it: compact JSON and a newline. */
function logLine(record: unknown): string {
  return `${JSON.stringify(record)}\n`;
}

/**
 * Rewrites the log atomically with `header` (when given) and then `records`, one line each; this also drops a line
 * cut short, so that appends start on a fresh line.
 * Example: `writeLog('out/results.jsonl', rows)` or `writeLog(path, rows, { log: 'my kind', format: 1, settings })`.
 */
export function writeLog(path: string, records: Iterable<unknown>, header?: LogHeader<unknown>): void {
  const head = header === undefined ? '' : logLine({ log: header.log, format: header.format, settings: header.settings });
  writeFileAtomicSync(path, head + [...records].map(logLine).join(''));
}

/**
 * Appends one record as one line: a single write, then fsync, so the line is whole on disk before the next starts.
 * Example: `appendToLog('out/results.jsonl', { line: 3, status: 'ok' })`.
 */
export function appendToLog(path: string, record: unknown): void {
  appendDurably(path, logLine(record));
}

/**
 * Appends records as lines with a single write and one fsync: a group of finished pieces (a chunk of a batch)
 * costs one flush wait instead of one per row. A crash tears at most the last line, which the reader sets aside.
 * Example: `appendAllToLog('out/results.jsonl', [{ line: 3, status: 'ok' }, { line: 4, status: 'ok' }])`.
 */
export function appendAllToLog(path: string, records: readonly unknown[]): void {
  if (records.length > 0) appendDurably(path, records.map(logLine).join(''));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

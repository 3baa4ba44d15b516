// Resuming an `eval` run in an --out folder: read its results.jsonl, turn a damaged or foreign log into one line
// with the flags that get out of it (--out, --restart), warn about a torn last line, and refuse a log made with
// other settings. Shared by `eval timed` and `eval debias`, whose logs differ only in what a line holds.
import { RunLogError } from '../eval/timed-log.js';
import { restate, UsageError } from './errors.js';

/** What a results.jsonl reader returns: the log (undefined when there is none) and a torn last line, if any. */
export interface EarlierLogRead<L> {
  log?: L;
  tornLine?: number;
}

/**
 * The log of an earlier run in this --out, checked against this run's settings; undefined when there is none.
 * `differences` lists the settings that differ as readable phrases ("--seeds was 0,1 there and is 0,1,2 now").
 * Example: `readEarlierLog(p, readRunLog, (rec) => settingsDifferences(rec, settings))`.
 */
export function readEarlierLog<L extends { settings: Record<string, unknown> }>(
  logPath: string,
  read: (path: string) => EarlierLogRead<L>,
  differences: (recorded: Record<string, unknown>) => string[],
  quiet = false,
): L | undefined {
  let got: EarlierLogRead<L>;
  try {
    got = read(logPath);
  } catch (err) {
    if (err instanceof RunLogError && err.kind === 'foreign') throw restate(err, `${err.message}; pick another --out`);
    if (err instanceof RunLogError)
      throw restate(err, `${err.message}. Fix or remove the file, pick another --out, or pass --restart to discard the earlier results`);
    throw err;
  }
  if (got.tornLine !== undefined && !quiet)
    console.error(`time-edit: ${logPath} line ${got.tornLine} was cut short (an interrupted run): ignored; its entry is computed again`);
  if (got.log !== undefined) {
    const diffs = differences(got.log.settings);
    if (diffs.length > 0)
      throw new UsageError(
        `${logPath} holds results made with other settings: ${diffs.join('; ')}. Pick another --out, or pass --restart to discard those results and start over`,
      );
  }
  return got.log;
}

/**
 * Every entry of this --out, whichever run computed it: the earlier run's, replaced by this run's where both have
 * one, in entry order. Example: `allEntries(recorded, computed)` for the tables of a resumed run.
 */
export function allEntries<R extends { entry: { index: number } }>(recorded: Map<number, R>, computed: R[]): R[] {
  const all = new Map(recorded);
  for (const r of computed) all.set(r.entry.index, r);
  return [...all.values()].sort((a, b) => a.entry.index - b.entry.index);
}

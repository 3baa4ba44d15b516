// `eval timed` through the queue: one job per TIMED entry (its edit, the edited, baseline and oracle images, their
// judgement), run by a worker with runTimed itself. The submitter writes the entry's PNG files (same names, same
// bytes) durably, then hands the entry to `onEntry` in entry order, as the local run does (the CLI appends it to
// results.jsonl there), and only then removes the job and its artifacts: a submitter killed at any point loses
// nothing, and its rerun skips the entries in the log and collects the rest. Only the colour judge of the embedded
// toy world runs on workers (a CLIP judge would need its folder on every worker).
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { colourJudge, type EntryResult, type TimedOptions } from '../eval/timed.js';
import type { TimedEntry } from '../eval/timed-csv.js';
import { writeFilesAtomic } from '../fs/durable-file.js';
import { checkTimedResult } from './job-results.js';
import { PAYLOAD_FORMAT, type TimedJob } from './payload.js';
import { QueueError } from './queue-error.js';
import { Submission, type FinishedJob, type QueueTarget } from './submission.js';

/** TimedOptions sent to workers in the job, or used here: any other option set is refused rather than ignored. */
const SENT_OR_LOCAL = new Set([
  'seeds',
  'steps',
  'guidance',
  'lambda',
  'augmentations',
  'onlyV',
  'onlyK',
  'layers',
  'preserve',
  'mode',
  'keepUncond',
  'outDir',
  'judge',
  'batchSize',
  'onProgress',
  'earlier',
  'onEntry',
]);

/**
 * runTimed(ctx, entries, o) with the entries computed by the queue's workers for the model `fingerprint`: images go
 * to o.outDir/images, each finished entry to o.onEntry (in entry order); returns the results in order.
 * Example: `await runTimedOnQueue({ url }, ctx.fingerprint, entries, { ...options, onEntry: (r) => appendToRunLog(log, r) })`.
 */
export async function runTimedOnQueue(
  target: QueueTarget,
  fingerprint: string,
  entries: readonly TimedEntry[],
  o: TimedOptions,
): Promise<EntryResult[]> {
  const unknown = Object.entries(o).filter(([k, v]) => !SENT_OR_LOCAL.has(k) && v !== undefined && v !== false);
  if (unknown.length > 0)
    throw new InputError(unknown[0]![0], `${unknown[0]![0]}: this option is not sent to queue workers; run without the queue`);
  if (o.judge !== colourJudge)
    throw new InputError('judge', 'judge: a queue run judges with the colour classifier only (no CLIP judge on workers)');
  const jobOf = (entry: TimedEntry): TimedJob => ({
    kind: 'timed',
    format: PAYLOAD_FORMAT,
    fingerprint,
    entry,
    seeds: o.seeds,
    steps: o.steps,
    guidance: o.guidance,
    lambda: o.lambda,
    augmentations: o.augmentations,
    onlyV: o.onlyV,
    mode: o.mode,
    keepUncond: o.keepUncond === true,
    batchSize: o.batchSize ?? 16,
    ...(o.onlyK === true ? { onlyK: true } : {}),
    ...(o.layers !== undefined ? { layers: o.layers } : {}),
    ...(o.preserve !== undefined && o.preserve.length > 0 ? { preserve: o.preserve } : {}),
  });
  const jobs = entries.map(jobOf);
  const order = entries.map((e) => e.index);
  /** entries whose images are written, waiting for the earlier entries before they are handed on */
  const ready = new Map<number, { result: EntryResult; job: FinishedJob }>();
  const results: EntryResult[] = [];
  let next = 0;
  const submission = await Submission.open(target, fingerprint);
  try {
    // Entries an earlier run logged whose jobs its submitter, killed, did not remove: removed now with their artifacts.
    await submission.releaseWritten((o.earlier ?? []).filter((r) => r.scores !== undefined).map((r) => jobOf(r.entry)));
    await submission.run(jobs, async (f) => {
      const entry = (f.data as TimedJob).entry;
      if (f.failedReason !== undefined) throw new QueueError(`the queue job of TIMED entry ${entry.index} failed: ${f.failedReason}`);
      const r = checkTimedResult(f.value);
      const bytes = await submission.artifacts(r.files.map((file) => file.artifact)); // one round trip per entry
      const files = r.files.map((file, i) => ({ path: join(o.outDir, ...file.path.split('/')), data: bytes[i]! }));
      await writeFilesAtomic(files);
      ready.set(entry.index, { result: { entry: entries.find((e) => e.index === entry.index)!, ...r.result }, job: f });
      o.onProgress?.(`entry ${entry.index} done (${ready.size + next}/${entries.length})`);
      const durable: FinishedJob[] = [];
      while (next < order.length && ready.has(order[next]!)) {
        const { result, job } = ready.get(order[next]!)!;
        ready.delete(order[next]!);
        await o.onEntry?.(result);
        results.push(result);
        durable.push(job);
        next++;
      }
      return durable;
    });
  } finally {
    await submission.close();
  }
  return results;
}

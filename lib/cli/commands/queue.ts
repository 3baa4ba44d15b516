// `time-edit queue status|clean`: what is on the queue (this tool's queues, one per model, their job counts, the
// live workers and the models they serve) and the removal of finished jobs. Also the --queue handling shared by the
// commands that can hand their work to the queue (edit --batch, eval timed, generate): the URL (or `env`), the
// bounded wait for a worker, and a progress line with the number of live workers.
import { helpRequested, parseCommandLine } from '../flags.js';
import { UsageError } from '../errors.js';
import { cleanQueues, queueStatus } from '../../queue/status.js';
import { redactUrl, resolveQueueUrl, REDIS_URL_VARIABLE } from '../../queue/connection.js';
import type { QueueTarget } from '../../queue/submission.js';
import { generateOnQueue } from '../../queue/generate.js';
import { openEditContext, type EditContext } from '../../edit/context.js';
import { runTimedOnQueue } from '../../queue/timed.js';
import type { EntryResult, TimedOptions } from '../../eval/timed.js';
import type { TimedEntry } from '../../eval/timed-csv.js';
import { makeDirectory } from '../../fs/make-directory.js';
import { lockOutputFolder } from '../../fs/out-lock.js';
import type { Pipeline } from '../../model/pipeline.js';
import type { GeneratedImage, GenerateOptions } from '../../sample/generate.js';

export const summary = 'queue status | queue clean: the Redis queue of `time-edit worker` (jobs, live workers, models)';

const usage = `usage: time-edit queue status [--queue URL] [--json]
       time-edit queue clean [--queue URL] [--json]

  status        this tool's queues (one per model) with waiting, active, delayed, completed and failed jobs,
                and the live workers with the models they serve
  clean         remove the finished (completed and failed) jobs and the results no submitter will collect
  --queue URL   redis://[:password@]host:port[/db] or rediss:// (TLS); default, or with "env": $${REDIS_URL_VARIABLE}
  --json        print JSON on stdout

example: time-edit queue status --queue redis://127.0.0.1:6379`;

/** The URL of a --queue value (or TIME_EDIT_REDIS_URL); a malformed one is a usage error (exit 2) naming the flag. */
export function queueUrlFlag(value: string | undefined): string {
  try {
    return resolveQueueUrl(value);
  } catch (err) {
    throw new UsageError(`--queue: ${(err as Error).message}`);
  }
}

/** The variable that bounds how long a submitter waits while no worker serves its model (seconds, default 60). */
export const NO_WORKER_VARIABLE = 'TIME_EDIT_NO_WORKER_S';

/**
 * The queue target of a submitting command's --queue value, with a progress line on stderr (terminals only) that
 * shows the live workers. Example: `queueTarget('redis://127.0.0.1:6379', 'jobs')`.
 */
export function queueTarget(value: string, unit = 'jobs'): QueueTarget {
  const url = queueUrlFlag(value);
  const wait = process.env[NO_WORKER_VARIABLE];
  let noWorkerMs: number | undefined;
  if (wait !== undefined) {
    const s = Number(wait);
    if (!(Number.isFinite(s) && s > 0)) throw new UsageError(`${NO_WORKER_VARIABLE} must be a number of seconds > 0, got '${wait}'`);
    noWorkerMs = s * 1000;
  }
  const tty = process.stderr.isTTY === true;
  return {
    url,
    ...(noWorkerMs !== undefined ? { noWorkerMs } : {}),
    onLog: (m) => console.error(`time-edit: ${m}`),
    onProgress: tty
      ? (done, total, workers) => {
          const fill = total === 0 ? 30 : Math.round((done / total) * 30);
          process.stderr.write(
            `\r[${'#'.repeat(fill)}${'.'.repeat(30 - fill)}] ${done}/${total} ${unit}, ${workers} live worker${workers === 1 ? '' : 's'} `,
          );
          if (done === total) process.stderr.write('\n');
        }
      : undefined,
  };
}

export async function run(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === undefined || what === '--help' || what === '-h') {
    console.log(usage);
    return;
  }
  if (what !== 'status' && what !== 'clean') throw new UsageError(`unknown queue command '${what}'; available: status, clean\n${usage}`);
  const { values: v } = parseCommandLine(
    { args: rest, options: { queue: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } },
    usage,
  );
  if (helpRequested(v, usage)) return;
  const url = queueUrlFlag(v.queue);
  if (what === 'clean') {
    const r = await cleanQueues(url);
    if (v.json === true) console.log(JSON.stringify(r, null, 2));
    else console.log(`removed ${r.jobs} finished jobs and ${r.artifacts} uncollected results from ${redactUrl(url)}`);
    return;
  }
  const s = await queueStatus(url);
  if (v.json === true) {
    console.log(JSON.stringify(s, null, 2));
    return;
  }
  const lines = [`queue ${redactUrl(url)}`];
  if (s.queues.length === 0) lines.push('  no time-edit queues');
  for (const q of s.queues)
    lines.push(
      `  ${q.queue}: ${q.waiting} waiting, ${q.active} active, ${q.delayed} delayed, ${q.completed} completed, ${q.failed} failed`,
    );
  lines.push(`workers: ${s.workers.length} live`);
  for (const w of s.workers)
    lines.push(
      `  ${w.id} (${w.device}, concurrency ${w.concurrency}, ${w.jobs} jobs done, RSS ${(w.rssBytes / 1e6).toFixed(0)} MB): ` +
        w.models.map((m) => `${m.model} → ${m.queue}`).join(', '),
    );
  if (s.artifacts > 0) lines.push(`${s.artifacts} results waiting for their submitters`);
  console.log(lines.join('\n'));
}

/**
 * generate's --queue: locks --out (one submitter per folder, as edit --batch and eval timed), has the workers make
 * the images, and returns them with `release`, to call once they are written (it removes the jobs from Redis and
 * unlocks --out). Example: `const q = await generateThroughQueue('env', pipeline, options, outDir)`.
 */
export async function generateThroughQueue(
  value: string,
  pipeline: Pipeline,
  options: GenerateOptions,
  outDir: string,
): Promise<{ images: GeneratedImage[]; release(): Promise<void> }> {
  const target = queueTarget(value, 'jobs');
  const { fingerprint } = await openEditContext(pipeline);
  makeDirectory(outDir);
  const unlock = lockOutputFolder(outDir, 'generate --queue');
  try {
    const q = await generateOnQueue(target, pipeline, fingerprint, { ...options, onProgress: undefined });
    return {
      images: q.images,
      release: async () => {
        try {
          await q.release();
        } finally {
          unlock();
        }
      },
    };
  } catch (err) {
    unlock();
    throw err;
  }
}

/**
 * eval timed's --queue: a function with runTimed's signature that has the workers compute the entries.
 * Example: `const run = timedThroughQueue('env'); await run(ctx, entries, options)`.
 */
export function timedThroughQueue(value: string): (ctx: EditContext, entries: TimedEntry[], o: TimedOptions) => Promise<EntryResult[]> {
  const target = queueTarget(value, 'entries');
  return (ctx, entries, o) => runTimedOnQueue(target, ctx.fingerprint, entries, o);
}

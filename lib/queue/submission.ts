// The submitting side of a queue run: adds a run's jobs with their deterministic ids (lib/queue/payload.ts jobIdOf),
// so that a rerun after a kill finds the jobs it added before (BullMQ adds nothing for an id it holds) and collects
// what workers finished meanwhile; then waits until every job is finished, handing each result to the caller, and
// removes a job and its artifacts only once the caller says its output is durably written.
// Waiting: BullMQ's QueueEvents (a blocking XREAD on the queue's event stream, from the stream's last entry before
// the first look at the finished jobs, so no completion falls between the two) wakes the submitter as soon as a job of
// this run completes or fails; what it then reads is the queue's finished jobs, as a poll would. The poll itself still
// runs once a second, so that nothing is missed when events are (a Redis restart, a trimmed stream). Each finished
// job costs the submitter a few round trips whatever its number of files: one to read the job, one MGET for its
// artifacts (raw bytes), one pipelined removal once it is written.
// While jobs wait, the submitter watches the workers' heartbeats: when no live worker has served the model for
// `noWorkerMs`, it stops with a QueueError saying so (the jobs stay queued for a rerun).
import { Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { checkConnection, openConnection, redactUrl } from './connection.js';
import { artifactsOf } from './job-results.js';
import { artifactSetKey, BULL_PREFIX, queueNameFor } from './names.js';
import { jobIdOf, type JobData } from './payload.js';
import { QueueError } from './queue-error.js';
import { liveWorkers } from './worker-registry.js';

/** Where a run's jobs go and how long it waits. */
export interface QueueTarget {
  /** redis:// or rediss:// URL */
  url: string;
  /** stop when no live worker serves the model for this long (default 60 000 ms) */
  noWorkerMs?: number;
  /** how long a lost Redis connection is retried (default 60 s) */
  reconnectMs?: number;
  /** told (jobs finished, jobs in all, live workers for this model) as jobs finish and every second */
  onProgress?: (done: number, total: number, workers: number) => void;
  /** told of connection trouble (redacted) */
  onLog?: (message: string) => void;
  /** told of each job once the caller has handled it, with its time stamps (for `bench queue`'s breakdown) */
  onJobTimes?: (times: JobTimes) => void;
}

/**
 * The time stamps of one finished job, in ms since the epoch: `added`, `taken` (by a worker) and `finished` are
 * BullMQ's (Redis-side, set by the submitter's and the worker's clocks), `seen` (the submitter read the job),
 * `handled` (the caller's onFinished returned: output written) are the submitter's.
 */
export interface JobTimes {
  id: string;
  added: number;
  taken?: number;
  finished?: number;
  seen: number;
  handled: number;
}

/** A finished job as the caller sees it: its id, its payload and its return value (or the reason it failed). */
export interface FinishedJob {
  id: string;
  data: JobData;
  value?: unknown;
  failedReason?: string;
  /** BullMQ's time stamps of the job and when this submitter read it (see JobTimes) */
  times?: Omit<JobTimes, 'id' | 'handled'>;
}

/** Job ids whose output the caller has written durably: their jobs and artifacts can go. */
export type Written = readonly string[];

/** How often the finished jobs are read even without an event, and the workers' heartbeats checked. */
const POLL_MS = 1000;

/** Live workers (heartbeat keys) serving the model with this fingerprint. */
export async function liveWorkersFor(conn: Redis, fingerprint: string): Promise<number> {
  return (await liveWorkers(conn)).filter((w) => w.models.some((m) => m.fingerprint === fingerprint)).length;
}

/**
 * A wake-up call that can be waited for: `wait(ms)` settles at the next `wake()` or after `ms`, whichever comes first;
 * a wake() while nobody waits makes the next wait() return at once, so that no wake-up is lost.
 */
class Alarm {
  private rung = false;
  private stopWaiting: (() => void) | undefined;

  wake(): void {
    this.rung = true;
    this.stopWaiting?.();
  }

  async wait(ms: number): Promise<void> {
    if (!this.rung)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.stopWaiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    this.stopWaiting = undefined;
    this.rung = false;
  }
}

/**
 * One run's jobs on the queue of one model. Example:
 * `const s = await Submission.open(target, ctx.fingerprint); await s.run(jobs, async (f) => { …write…; return [f] }); await s.close()`.
 */
export class Submission {
  private constructor(
    readonly target: QueueTarget,
    readonly fingerprint: string,
    private readonly conn: Redis,
    private readonly queue: Queue,
    private readonly lost: Promise<never>,
  ) {}

  /** Checks the connection (one clear QueueError when it is refused) and opens the model's queue. */
  static async open(target: QueueTarget, fingerprint: string): Promise<Submission> {
    await checkConnection(target.url);
    let giveUp: (err: QueueError) => void = () => {};
    const lost = new Promise<never>((_, reject) => {
      giveUp = reject;
    });
    lost.catch(() => {});
    const conn = openConnection(target.url, { reconnectMs: target.reconnectMs, onTrouble: target.onLog, onGiveUp: (e) => giveUp(e) });
    const queue = new Queue(queueNameFor(fingerprint), { connection: conn, prefix: BULL_PREFIX });
    queue.on('error', () => {}); // connection trouble is reported once by the connection itself
    return new Submission(target, fingerprint, conn, queue, lost);
  }

  /**
   * The bytes of a job's artifacts, in the order of `keys`, read in one round trip (MGET); a QueueError when one is
   * gone (expired, or removed by `queue clean`).
   */
  async artifacts(keys: readonly string[]): Promise<Buffer[]> {
    if (keys.length === 0) return [];
    const values = await this.conn.mgetBuffer(...keys);
    return values.map((b, i) => {
      if (b === null) throw new QueueError(`the result ${keys[i]} is no longer in Redis (expired or cleaned): rerun to compute it again`);
      return b;
    });
  }

  /** The bytes of one artifact a worker stored (see `artifacts`). */
  async artifact(key: string): Promise<Buffer> {
    return (await this.artifacts([key]))[0]!;
  }

  /**
   * Removes finished jobs and their artifacts (their output is written): the artifacts the return values name and
   * those of every other attempt at the jobs (a job that stalled and ran twice), then the jobs; a few round trips in
   * all, however many jobs and files.
   */
  async release(finished: readonly FinishedJob[]): Promise<void> {
    if (finished.length === 0) return;
    const queue = queueNameFor(this.fingerprint);
    const sets = finished.map((f) => artifactSetKey(queue, f.id));
    const members = await Promise.all(sets.map((set) => this.conn.smembers(set)));
    const keys = [...finished.flatMap((f) => artifactsOf(f.value)), ...members.flat(), ...sets];
    const deletions: Promise<unknown>[] = [];
    for (let i = 0; i < keys.length; i += 500) deletions.push(this.conn.del(...keys.slice(i, i + 500)));
    await Promise.all([...deletions, ...finished.map((f) => this.queue.remove(f.id).catch(() => 0))]);
  }

  /**
   * Removes those of `jobs` that are finished in Redis, with their artifacts: jobs whose output an earlier submitter
   * wrote durably but which it could not remove before it was killed (a rerun skips their items, so it would never
   * collect them). Jobs still waiting or running are left alone. Example: `await s.releaseWritten(jobsOfDoneItems)`.
   */
  async releaseWritten(jobs: readonly JobData[]): Promise<void> {
    if (jobs.length === 0) return;
    const byId = new Map(jobs.map((data) => [jobIdOf(data), data]));
    const finished = new Set(await Promise.race([this.queue.getRanges(['completed', 'failed'], 0, -1), this.lost]));
    const stale = [...byId].filter(([id]) => finished.has(id)).map(([id, data]) => ({ id, data }));
    await Promise.race([this.release(stale), this.lost]);
  }

  /**
   * Adds `jobs` (an existing id is kept as it is) and waits until each has finished, calling `onFinished` for each
   * (once per id; several payloads with one id are one job); `onFinished` returns the finished jobs whose output is now
   * durable, which are then removed from Redis. Returns when every job has been handed over; the caller releases the
   * rest with `release`.
   */
  async run(jobs: readonly JobData[], onFinished: (f: FinishedJob) => Promise<readonly FinishedJob[]>): Promise<void> {
    const pending = new Map<string, JobData>();
    for (const data of jobs) pending.set(jobIdOf(data), data);
    const total = pending.size;
    await Promise.race([this.add(pending), this.lost]);
    const alarm = new Alarm();
    const events = await Promise.race([this.listen(pending, alarm), this.lost]);
    try {
      let done = 0;
      let workers = await Promise.race([liveWorkersFor(this.conn, this.fingerprint), this.lost]);
      let noWorkerSince = workers === 0 ? Date.now() : undefined;
      let lastBeat = Date.now();
      this.target.onProgress?.(0, total, workers);
      const noWorkerMs = this.target.noWorkerMs ?? 60_000;
      while (pending.size > 0) {
        const finished = await Promise.race([this.collect(pending), this.lost]).catch((err: unknown) => {
          if (err instanceof QueueError) throw err;
          return [] as FinishedJob[]; // a command that failed while Redis restarts: the next look retries
        });
        for (const f of finished) {
          pending.delete(f.id);
          done++;
          const written = await onFinished(f);
          const handled = Date.now();
          if (f.times !== undefined) this.target.onJobTimes?.({ id: f.id, ...f.times, handled });
          await Promise.race([this.release(written), this.lost]);
        }
        if (finished.length > 0) this.target.onProgress?.(done, total, workers);
        if (Date.now() - lastBeat >= POLL_MS) {
          lastBeat = Date.now();
          workers = await Promise.race([liveWorkersFor(this.conn, this.fingerprint), this.lost]).catch((err: unknown) => {
            if (err instanceof QueueError) throw err;
            return workers;
          });
          if (workers > 0) noWorkerSince = undefined;
          else noWorkerSince ??= Date.now();
          this.target.onProgress?.(done, total, workers);
          if (noWorkerSince !== undefined && Date.now() - noWorkerSince > noWorkerMs)
            throw new QueueError(
              `no live worker has served model ${this.fingerprint.slice(0, 16)}… (queue ${queueNameFor(this.fingerprint)} on ${redactUrl(this.target.url)}) for ${Math.round(noWorkerMs / 1000)} s; ` +
                `${pending.size} of ${total} jobs are still queued: start \`time-edit worker --model <this model>\` and run the command again to collect them`,
            );
        }
        // An event that came while the jobs above were handled has rung already: no wait then.
        if (pending.size > 0) await Promise.race([alarm.wait(Math.max(1, POLL_MS - (Date.now() - lastBeat))), this.lost]);
      }
    } finally {
      await events.close().catch(() => {});
    }
  }

  /**
   * Listens to the queue's events on a connection of its own (QueueEvents blocks on XREAD), from the stream's current
   * last entry: every job of `pending` that completes or fails from now on rings `alarm`.
   */
  private async listen(pending: Map<string, JobData>, alarm: Alarm): Promise<QueueEvents> {
    const last = await this.conn.xrevrange(this.queue.keys.events!, '+', '-', 'COUNT', 1);
    const events = new QueueEvents(queueNameFor(this.fingerprint), {
      connection: this.conn,
      prefix: BULL_PREFIX,
      lastEventId: last[0]?.[0] ?? '0-0',
    });
    events.on('error', () => {}); // connection trouble is reported once by the main connection; the poll goes on
    const ring = ({ jobId }: { jobId: string }) => {
      if (pending.has(jobId)) alarm.wake();
    };
    events.on('completed', ring);
    events.on('failed', ring);
    return events;
  }

  private async add(pending: Map<string, JobData>): Promise<void> {
    const entries = [...pending.entries()];
    for (let i = 0; i < entries.length; i += 500)
      await this.queue.addBulk(
        entries.slice(i, i + 500).map(([id, data]) => ({
          name: data.kind,
          data,
          opts: { jobId: id, attempts: 2, backoff: { type: 'fixed', delay: 1000 }, removeOnComplete: false, removeOnFail: false },
        })),
      );
  }

  /** This run's jobs among the queue's finished ones, with their values. */
  private async collect(pending: Map<string, JobData>): Promise<FinishedJob[]> {
    const [completed, failed] = await Promise.all([this.queue.getRanges(['completed'], 0, -1), this.queue.getRanges(['failed'], 0, -1)]);
    const states = new Map<string, 'completed' | 'failed'>();
    for (const id of completed) if (pending.has(id)) states.set(id, 'completed');
    for (const id of failed) if (pending.has(id) && !states.has(id)) states.set(id, 'failed');
    const ids = [...states.keys()];
    const jobs = await Promise.all(ids.map((id) => Job.fromId(this.queue, id)));
    const seen = Date.now();
    const out: FinishedJob[] = [];
    ids.forEach((id, i) => {
      const job = jobs[i];
      if (job === undefined) return;
      const times = {
        added: job.timestamp,
        seen,
        ...(job.processedOn !== undefined ? { taken: job.processedOn } : {}),
        ...(job.finishedOn !== undefined ? { finished: job.finishedOn } : {}),
      };
      out.push({
        id,
        data: pending.get(id)!,
        times,
        ...(states.get(id) === 'failed' ? { failedReason: job.failedReason || 'failed' } : { value: job.returnvalue as unknown }),
      });
    });
    return out;
  }

  /** Closes the queue and the connection (jobs stay in Redis). */
  async close(): Promise<void> {
    await this.queue.close().catch(() => {});
    this.conn.disconnect();
  }
}

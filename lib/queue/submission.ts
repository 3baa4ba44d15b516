// The submitting side of a queue run: adds a run's jobs with their deterministic ids (lib/queue/payload.ts jobIdOf),
// so that a rerun after a kill finds the jobs it added before (BullMQ adds nothing for an id it holds) and collects
// what workers finished meanwhile; then polls until every job is finished, handing each result to the caller, and
// removes a job and its artifacts only once the caller says its output is durably written. Polling (the ids of the
// queue's finished jobs, then only this run's jobs) rather than an event stream: nothing is missed across a Redis
// restart or a submitter restart. While jobs wait, the submitter watches the workers' heartbeats: when no live worker
// has served the model for `noWorkerMs`, it stops with a QueueError saying so (the jobs stay queued for a rerun).
import { Queue, Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { checkConnection, openConnection, redactUrl } from './connection.js';
import { artifactsOf } from './job-results.js';
import { artifactSetKey, BULL_PREFIX, queueNameFor, WORKER_KEY_PATTERN } from './names.js';
import { jobIdOf, type JobData } from './payload.js';
import { QueueError } from './queue-error.js';

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
}

/** A finished job as the caller sees it: its id, its payload and its return value (or the reason it failed). */
export interface FinishedJob {
  id: string;
  data: JobData;
  value?: unknown;
  failedReason?: string;
}

/** Job ids whose output the caller has written durably: their jobs and artifacts can go. */
export type Written = readonly string[];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Live workers (heartbeat keys) serving the model with this fingerprint. */
export async function liveWorkersFor(conn: Redis, fingerprint: string): Promise<number> {
  let n = 0;
  let cursor = '0';
  do {
    const [next, keys] = await conn.scan(cursor, 'MATCH', WORKER_KEY_PATTERN, 'COUNT', 200);
    cursor = next;
    if (keys.length === 0) continue;
    const values = await conn.mget(...keys);
    for (const v of values) {
      try {
        const info = JSON.parse(v ?? 'null') as { models?: { fingerprint?: string }[] } | null;
        if (info?.models?.some((m) => m.fingerprint === fingerprint)) n++;
      } catch {
        // not a heartbeat of this tool
      }
    }
  } while (cursor !== '0');
  return n;
}

/**
 * One run's jobs on the queue of one model. Example:
 * `const s = await Submission.open(target, ctx.fingerprint); await s.run(jobs, async (f) => { …write…; return [f.id] }); await s.close()`.
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

  /** The bytes of an artifact a worker stored; a QueueError when it is gone (expired, or removed by `queue clean`). */
  async artifact(key: string): Promise<Buffer> {
    const b = await this.conn.getBuffer(key);
    if (b === null) throw new QueueError(`the result ${key} is no longer in Redis (expired or cleaned): rerun to compute it again`);
    return b;
  }

  /** Removes finished jobs and their artifacts (their output is written). */
  async release(finished: readonly FinishedJob[]): Promise<void> {
    if (finished.length === 0) return;
    const keys = finished.flatMap((f) => artifactsOf(f.value));
    const queue = queueNameFor(this.fingerprint);
    for (const f of finished) {
      const set = artifactSetKey(queue, f.id);
      keys.push(...(await this.conn.smembers(set)), set); // other attempts' artifacts too (a job that stalled)
    }
    for (let i = 0; i < keys.length; i += 500) await this.conn.del(...keys.slice(i, i + 500));
    for (const f of finished) await this.queue.remove(f.id).catch(() => 0);
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
    let done = 0;
    let workers = await Promise.race([liveWorkersFor(this.conn, this.fingerprint), this.lost]);
    let noWorkerSince = workers === 0 ? Date.now() : undefined;
    let lastBeat = 0;
    let idle = 10;
    this.target.onProgress?.(0, total, workers);
    const noWorkerMs = this.target.noWorkerMs ?? 60_000;
    while (pending.size > 0) {
      const finished = await Promise.race([this.collect(pending), this.lost]).catch((err: unknown) => {
        if (err instanceof QueueError) throw err;
        return [] as FinishedJob[]; // a command that failed while Redis restarts: the next poll retries
      });
      for (const f of finished) {
        pending.delete(f.id);
        done++;
        await this.release(await onFinished(f));
      }
      if (finished.length > 0) this.target.onProgress?.(done, total, workers);
      if (Date.now() - lastBeat >= 1000) {
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
      idle = finished.length > 0 ? 10 : Math.min(200, idle * 2);
      if (pending.size > 0) await sleep(idle);
    }
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
    const out: FinishedJob[] = [];
    for (const state of ['completed', 'failed'] as const) {
      const ids = await this.queue.getRanges([state], 0, -1);
      for (const id of new Set(ids)) {
        if (!pending.has(id) || out.some((f) => f.id === id)) continue;
        const job = await Job.fromId(this.queue, id);
        if (job === undefined) continue;
        out.push({
          id,
          data: pending.get(id)!,
          ...(state === 'failed' ? { failedReason: job.failedReason || 'failed' } : { value: job.returnvalue as unknown }),
        });
      }
    }
    return out;
  }

  /** Closes the queue and the connection (jobs stay in Redis). */
  async close(): Promise<void> {
    await this.queue.close().catch(() => {});
    this.conn.disconnect();
  }
}

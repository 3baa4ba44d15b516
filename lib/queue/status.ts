// What `queue status` shows and what `queue clean` removes: this tool's queues (one per model, lib/queue/names.ts)
// with their job counts, the live workers with the models they serve, and the finished jobs and their artifacts.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { checkConnection, openConnection } from './connection.js';
import { ARTIFACT_KEY_PATTERN, artifactOwner, BULL_PREFIX, KEY_PREFIX, QUEUE_PREFIX } from './names.js';
import { liveWorkers, type WorkerInfo } from './worker-registry.js';

export interface QueueCounts {
  queue: string;
  waiting: number;
  active: number;
  delayed: number;
  completed: number;
  failed: number;
}

export interface QueueStatus {
  queues: QueueCounts[];
  workers: WorkerInfo[];
  /** artifact keys in Redis (results not yet collected by their submitters) */
  artifacts: number;
}

async function scanAll(conn: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await conn.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

/** The names of this tool's queues in Redis (from BullMQ's meta keys) and of those live workers listen on. */
async function queueNames(conn: Redis, workers: WorkerInfo[]): Promise<string[]> {
  const names = new Set<string>();
  for (const k of await scanAll(conn, `${BULL_PREFIX}:${QUEUE_PREFIX}*:meta`)) names.add(k.slice(BULL_PREFIX.length + 1, -':meta'.length));
  for (const k of await scanAll(conn, `${BULL_PREFIX}:${QUEUE_PREFIX}*:id`)) names.add(k.slice(BULL_PREFIX.length + 1, -':id'.length));
  for (const w of workers) for (const m of w.models) names.add(m.queue);
  return [...names].sort();
}

async function withConnection<T>(url: string, f: (conn: Redis) => Promise<T>): Promise<T> {
  await checkConnection(url);
  const conn = openConnection(url, { reconnectMs: 5000 });
  try {
    return await f(conn);
  } finally {
    conn.disconnect();
  }
}

/**
 * The queues of this tool with their job counts, the live workers and the number of uncollected artifacts.
 * Example: `const s = await queueStatus('redis://127.0.0.1:6379'); s.workers.length`.
 */
export function queueStatus(url: string): Promise<QueueStatus> {
  return withConnection(url, async (conn) => {
    const workers = await liveWorkers(conn);
    const queues: QueueCounts[] = [];
    for (const name of await queueNames(conn, workers)) {
      const q = new Queue(name, { connection: conn, prefix: BULL_PREFIX });
      const c = await q.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized');
      queues.push({
        queue: name,
        waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
        active: c.active ?? 0,
        delayed: c.delayed ?? 0,
        completed: c.completed ?? 0,
        failed: c.failed ?? 0,
      });
      await q.close();
    }
    return { queues, workers, artifacts: (await scanAll(conn, ARTIFACT_KEY_PATTERN)).length };
  });
}

/**
 * Removes this tool's finished jobs (completed and failed) from every queue, and the artifacts of jobs no longer in
 * Redis; waiting and active jobs are kept. A submitter that had not yet collected a removed job's result computes it
 * again when rerun. Example: `const { jobs, artifacts } = await cleanQueues(url)`.
 */
export function cleanQueues(url: string): Promise<{ jobs: number; artifacts: number }> {
  return withConnection(url, async (conn) => {
    let jobs = 0;
    const names = await queueNames(conn, await liveWorkers(conn));
    for (const name of names) {
      const q = new Queue(name, { connection: conn, prefix: BULL_PREFIX });
      for (const state of ['completed', 'failed'] as const) {
        for (;;) {
          const removed = await q.clean(0, 10_000, state);
          jobs += removed.length;
          if (removed.length < 10_000) break;
        }
      }
      await q.close();
    }
    let artifacts = 0;
    for (const key of await scanAll(conn, ARTIFACT_KEY_PATTERN)) {
      const owner = artifactOwner(key);
      if (owner === undefined) continue;
      const alive = await conn.exists(`${BULL_PREFIX}:${owner.queue}:${owner.jobId}`);
      if (alive === 0) artifacts += await conn.del(key);
    }
    for (const set of await scanAll(conn, `${KEY_PREFIX}:artifacts-of:*`)) {
      const [, , queue, jobId] = set.split(':');
      if ((await conn.exists(`${BULL_PREFIX}:${queue}:${jobId}`)) === 0) await conn.del(set);
    }
    return { jobs, artifacts };
  });
}

// Which workers are alive, and what they serve. Each worker renews a heartbeat key of its own (its WorkerInfo as JSON,
// expiring HEARTBEAT_TTL_MS after the last renewal, so a killed worker disappears by itself) and lists its id in one
// set. Readers (submitters every second, `queue status`) fetch the listed workers' heartbeats in two round trips
// (SMEMBERS, MGET) instead of scanning the whole keyspace for them, which holds a key per job and per artifact: a
// SCAN costs time in proportion to every key in Redis, and a submitter of 10,000 jobs would pay it every second.
// A listed worker whose heartbeat has expired is taken off the set by the reader that finds it so.
import type { Redis } from 'ioredis';
import { HEARTBEAT_TTL_MS, WORKER_SET_KEY, workerKey } from './names.js';

/** What a worker serves, as its heartbeat tells it. */
export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  models: { fingerprint: string; model: string; queue: string }[];
  device: string;
  concurrency: number;
  jobs: number;
  rssBytes: number;
  since: string;
}

/**
 * Renews a worker's heartbeat (and lists it): call it every HEARTBEAT_MS. Example:
 * `setInterval(() => void renewHeartbeat(conn, info), HEARTBEAT_MS)`.
 */
export async function renewHeartbeat(conn: Redis, info: WorkerInfo): Promise<void> {
  await conn.multi().set(workerKey(info.id), JSON.stringify(info), 'PX', HEARTBEAT_TTL_MS).sadd(WORKER_SET_KEY, info.id).exec();
}

/** Removes a stopping worker's heartbeat and its listing. Example: `await withdrawHeartbeat(conn, info.id)`. */
export async function withdrawHeartbeat(conn: Redis, id: string): Promise<void> {
  await conn.multi().del(workerKey(id)).srem(WORKER_SET_KEY, id).exec();
}

const isWorkerInfo = (v: unknown): v is WorkerInfo =>
  typeof v === 'object' && v !== null && typeof (v as WorkerInfo).id === 'string' && Array.isArray((v as WorkerInfo).models);

/**
 * The live workers (those whose heartbeat has not expired), sorted by id. Example:
 * `(await liveWorkers(conn)).filter((w) => w.models.some((m) => m.fingerprint === fp)).length`.
 */
export async function liveWorkers(conn: Redis): Promise<WorkerInfo[]> {
  const ids = await conn.smembers(WORKER_SET_KEY);
  if (ids.length === 0) return [];
  const values = await conn.mget(...ids.map(workerKey));
  const out: WorkerInfo[] = [];
  const gone: string[] = [];
  values.forEach((v, i) => {
    if (v === null) {
      gone.push(ids[i]!);
      return;
    }
    try {
      const info: unknown = JSON.parse(v);
      if (isWorkerInfo(info)) out.push(info);
    } catch {
      // not a heartbeat of this tool
    }
  });
  if (gone.length > 0) await conn.srem(WORKER_SET_KEY, ...gone);
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

// Where this tool's things live in Redis. One BullMQ queue per model: `time-edit-<first 16 hex of the model's edit
// fingerprint>`, so that a worker listens only on the queues of the models it serves and a job is never taken by a
// worker that cannot run it. Workers announce themselves with a heartbeat key that expires when they stop renewing
// it, listed in one set. Artifacts (edit files, images) are keys of their own, named after their queue and job,
// removed by the submitter once it has written them, and expiring after ARTIFACT_TTL_S in any case.
/** BullMQ's key prefix (its default), so that BullMQ's own tools see these queues. */
export const BULL_PREFIX = 'bull';

/** Prefix of this tool's own keys (worker heartbeats, artifacts). */
export const KEY_PREFIX = 'time-edit';

/** Name-prefix of this tool's queues. */
export const QUEUE_PREFIX = 'time-edit-';

/** An artifact left by a job whose submitter never came back expires after a week. */
export const ARTIFACT_TTL_S = 7 * 24 * 3600;

/** A worker's heartbeat key lives this long unless renewed (renewed every HEARTBEAT_MS). */
export const HEARTBEAT_TTL_MS = 10_000;
export const HEARTBEAT_MS = 3_000;

/**
 * The queue of the model with this edit fingerprint. Example: `queueNameFor('9f3a…')` → `'time-edit-9f3a…'` (16 hex).
 */
export function queueNameFor(fingerprint: string): string {
  return `${QUEUE_PREFIX}${fingerprint.slice(0, 16)}`;
}

/** The heartbeat key of a worker. */
export function workerKey(id: string): string {
  return `${KEY_PREFIX}:worker:${id}`;
}

/**
 * The set of the ids of workers that announced themselves: readers look up these workers' heartbeat keys instead of
 * scanning the keyspace (which holds a key per job and per artifact) for them.
 */
export const WORKER_SET_KEY = `${KEY_PREFIX}:workers`;

/** The key of artifact `index` of one attempt (`token`) at a job. */
export function artifactKey(queue: string, jobId: string, token: string, index: number): string {
  return `${KEY_PREFIX}:artifact:${queue}:${jobId}:${token}:${index}`;
}

/**
 * The set of every artifact key any attempt at a job stored: a job retried after its worker lost the lock (a stall)
 * leaves the first attempt's artifacts too, and the submitter removes them all with the job.
 */
export function artifactSetKey(queue: string, jobId: string): string {
  return `${KEY_PREFIX}:artifacts-of:${queue}:${jobId}`;
}

/** The pattern that matches every artifact key. */
export const ARTIFACT_KEY_PATTERN = `${KEY_PREFIX}:artifact:*`;

/** The queue and job id an artifact key belongs to, or undefined for a key of another shape. */
export function artifactOwner(key: string): { queue: string; jobId: string } | undefined {
  const parts = key.split(':');
  if (parts.length !== 6 || parts[0] !== KEY_PREFIX || parts[1] !== 'artifact') return undefined;
  return { queue: parts[2]!, jobId: parts[3]! };
}

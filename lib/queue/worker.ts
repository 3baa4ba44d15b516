// A queue worker: a long-lived process that loads the models it was started with once, keeps them warm, and takes
// jobs from the queue of each (one BullMQ queue per model fingerprint, lib/queue/names.ts), so that a job is only
// ever taken by a worker that serves its model. Each job is validated first (lib/queue/payload.ts): a payload that
// fails is failed with the reason (BullMQ's UnrecoverableError: no retry) and never executed. The computation is the
// library's own: computeBatchChunk for edit --batch chunks, generate() for images, runTimed() for a TIMED entry (into
// a temporary folder of the worker's, read back and removed). Results go back through Redis: small JSON as the job's
// return value, bytes as artifact keys (raw, all of a job's in one MULTI). BullMQ hands the worker its next job in
// the same call that completes the last one, so it does not idle between jobs. The worker announces itself with a
// heartbeat (models served, jobs done, RSS; lib/queue/worker-registry.ts) that `queue status` and submitters read.
// close() lets the current jobs finish (BullMQ's Worker.close), then removes the heartbeat: SIGTERM handling in the
// CLI calls it. A worker killed outright stops renewing its jobs' locks;
// BullMQ's stalled-job check gives them to another worker after `stallMs`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { computeBatchChunk } from '../edit/batch.js';
import { openEditContext, type EditContext } from '../edit/context.js';
import { colourJudge, runTimed } from '../eval/timed.js';
import { loadPipeline, type Device } from '../model/pipeline.js';
import { generate, validateGenerateOptions, type GenerateOptions } from '../sample/generate.js';
import { defaultSolver, type EditSolver } from '../solver/select.js';
import { checkConnection, openConnection, redactSecrets } from './connection.js';
import type { BatchJobResult, GenerateJobResult, TimedJobResult } from './job-results.js';
import { ARTIFACT_TTL_S, artifactKey, artifactSetKey, BULL_PREFIX, HEARTBEAT_MS, queueNameFor } from './names.js';
import { validateJob, type JobData } from './payload.js';
import { renewHeartbeat, withdrawHeartbeat, type WorkerInfo } from './worker-registry.js';

export interface QueueWorkerOptions {
  /** redis:// or rediss:// URL (see lib/queue/connection.ts) */
  url: string;
  /** model folders to serve (default: the embedded toy model) */
  models?: string[];
  device?: Device;
  threads?: number;
  /** jobs run at once per model (default 1) */
  concurrency?: number;
  /** a job whose worker stops renewing its lock for this long goes back to the queue (default 30 000 ms) */
  stallMs?: number;
  /** how long a lost Redis connection is retried (default 60 s) */
  reconnectMs?: number;
  /** told of the worker's events: started, a failed job, connection trouble (redacted) */
  onLog?: (message: string) => void;
}

export type { WorkerInfo } from './worker-registry.js';

/** A running worker. */
export interface QueueWorker {
  readonly info: WorkerInfo;
  /** lets the current jobs finish, stops taking new ones, removes the heartbeat, closes the models */
  close(): Promise<void>;
  /** settles when the worker has stopped: resolves after close(), rejects when Redis was lost for good */
  readonly stopped: Promise<void>;
}

interface Served {
  ctx: EditContext;
  solver: EditSolver;
  queue: string;
}

/** Every file under `dir`, as paths relative to it with '/' separators. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p).split('\\').join('/'));
    }
  };
  walk(dir);
  return out;
}

/**
 * Runs one validated job with a served model; `put` names an artifact (its key) and keeps its bytes for the one Redis
 * round trip that stores all of the job's artifacts once it is computed.
 */
async function execute(s: Served, data: JobData, put: (bytes: Uint8Array) => string): Promise<unknown> {
  const pipeline = s.ctx.pipeline;
  if (data.kind === 'batch') {
    const c = await computeBatchChunk(s.ctx, data.lines, data.defaults, s.solver);
    const edits: BatchJobResult['edits'] = [];
    for (const e of c.edits) edits.push({ row: e.row, artifact: put(e.data) });
    return { errors: c.errors, edits, solveMs: c.solveMs, solver: c.solver } satisfies BatchJobResult;
  }
  if (data.kind === 'generate') {
    const o: GenerateOptions = {
      prompts: [data.prompt],
      seeds: data.seeds,
      steps: data.steps,
      guidance: data.guidance,
      height: data.height,
      width: data.width,
      batchSize: data.batchSize,
      ...(data.scheduler !== undefined ? { scheduler: data.scheduler } : {}),
      ...(data.negativePrompt !== undefined ? { negativePrompt: data.negativePrompt } : {}),
    };
    try {
      validateGenerateOptions(pipeline, o); // the library's own checks (size multiple, memory estimate …), before any work
    } catch (err) {
      throw new UnrecoverableError(`refused job payload: ${(err as Error).message}`);
    }
    const images = await generate(pipeline, o);
    const out: GenerateJobResult['images'] = [];
    for (const img of images) out.push({ seed: img.seed, width: img.width, height: img.height, artifact: put(img.rgb) });
    return { images: out } satisfies GenerateJobResult;
  }
  // One TIMED entry, written by runTimed itself into a folder of the worker's own, then read back as artifacts.
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-worker-'));
  try {
    const [r] = await runTimed(s.ctx, [data.entry], {
      seeds: data.seeds,
      steps: data.steps,
      guidance: data.guidance,
      lambda: data.lambda,
      augmentations: data.augmentations,
      onlyV: data.onlyV,
      mode: data.mode,
      keepUncond: data.keepUncond,
      outDir: dir,
      judge: colourJudge,
      batchSize: data.batchSize,
      ...(data.onlyK !== undefined ? { onlyK: data.onlyK } : {}),
      ...(data.layers !== undefined ? { layers: data.layers } : {}),
      ...(data.preserve !== undefined ? { preserve: data.preserve } : {}),
    });
    const files: TimedJobResult['files'] = [];
    for (const path of filesUnder(dir)) files.push({ path, artifact: put(readFileSync(join(dir, path))) });
    const { scores, error, editMs, seconds } = r!;
    return { result: { scores, error, editMs, seconds }, files } satisfies TimedJobResult;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Stores a job's artifacts (raw bytes, no encoding) and adds their keys to the job's set, in one MULTI: one round trip
 * per job however many files it made (a round trip per file cost more than the rest of a small job's overhead), and
 * all of them or none before the job is marked completed.
 */
async function storeArtifacts(conn: Redis, set: string, artifacts: readonly { key: string; bytes: Uint8Array }[]): Promise<void> {
  if (artifacts.length === 0) return;
  const m = conn.multi();
  for (const a of artifacts) m.set(a.key, Buffer.from(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength), 'EX', ARTIFACT_TTL_S);
  m.sadd(set, ...artifacts.map((a) => a.key)).expire(set, ARTIFACT_TTL_S);
  const replies = await m.exec();
  const failed = replies?.find(([err]) => err !== null)?.[0];
  if (replies === null || failed)
    throw new Error(`could not store the job's results in Redis: ${failed?.message ?? 'the transaction was aborted'}`);
}

/**
 * Starts a worker: loads every model (once), checks the Redis connection (a QueueError at once when it is refused),
 * and takes jobs until close(). Example:
 * `const w = await startQueueWorker({ url: 'redis://127.0.0.1:6379', models: ['models/sd15'] }); process.on('SIGTERM', () => w.close())`.
 */
export async function startQueueWorker(options: QueueWorkerOptions): Promise<QueueWorker> {
  const log = options.onLog ?? (() => {});
  await checkConnection(options.url);
  const served = new Map<string, Served>();
  const pipelines: { close(): Promise<void> }[] = [];
  try {
    for (const dir of options.models ?? [undefined]) {
      const pipeline = await loadPipeline(dir, { device: options.device, threads: options.threads });
      pipelines.push(pipeline);
      const ctx = await openEditContext(pipeline);
      if (!served.has(ctx.fingerprint))
        served.set(ctx.fingerprint, { ctx, solver: await defaultSolver(), queue: queueNameFor(ctx.fingerprint) });
    }
  } catch (err) {
    for (const p of pipelines) await p.close();
    throw err;
  }
  let failWith: (err: Error) => void = () => {};
  let finish: () => void = () => {};
  const stopped = new Promise<void>((resolve, reject) => {
    finish = resolve;
    failWith = reject;
  });
  stopped.catch(() => {}); // the caller may only await close()
  const conn: Redis = openConnection(options.url, {
    reconnectMs: options.reconnectMs,
    onTrouble: log,
    onGiveUp: (err) => failWith(err),
  });
  const id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const info: WorkerInfo = {
    id,
    host: hostname(),
    pid: process.pid,
    models: [...served.values()].map((s) => ({ fingerprint: s.ctx.fingerprint, model: s.ctx.pipeline.dir, queue: s.queue })),
    device: options.device ?? 'cpu',
    concurrency: options.concurrency ?? 1,
    jobs: 0,
    rssBytes: process.memoryUsage().rss,
    since: new Date().toISOString(),
  };
  const beat = async () => {
    info.rssBytes = process.memoryUsage().rss;
    try {
      await renewHeartbeat(conn, info);
    } catch {
      // reported by the connection's own trouble messages; the next beat retries
    }
  };
  await beat();
  const timer = setInterval(() => void beat(), HEARTBEAT_MS);
  const stallMs = options.stallMs ?? 30_000;
  const workers = [...served.values()].map((s) => {
    const w = new Worker(
      s.queue,
      async (job: Job) => {
        let data: JobData;
        try {
          data = validateJob(job.data, s.ctx.fingerprint);
        } catch (err) {
          throw new UnrecoverableError((err as Error).message);
        }
        const token = randomBytes(4).toString('hex');
        const artifacts: { key: string; bytes: Uint8Array }[] = [];
        const put = (bytes: Uint8Array): string => {
          const key = artifactKey(s.queue, job.id ?? 'unknown', token, artifacts.length);
          artifacts.push({ key, bytes });
          return key;
        };
        const value = await execute(s, data, put);
        await storeArtifacts(conn, artifactSetKey(s.queue, job.id ?? 'unknown'), artifacts);
        info.jobs++;
        return value;
      },
      {
        connection: conn,
        prefix: BULL_PREFIX,
        concurrency: options.concurrency ?? 1,
        lockDuration: stallMs,
        stalledInterval: stallMs,
        maxStalledCount: 5,
      },
    );
    w.on('failed', (job, err) => log(`job ${job?.id ?? '?'} failed: ${redactSecrets(err.message, options.url)}`));
    w.on('error', (err) => log(`worker: ${redactSecrets(err.message, options.url)}`));
    return w;
  });
  log(`serving ${info.models.map((m) => `${m.model} (model ${m.fingerprint.slice(0, 16)}…)`).join(', ')} as worker ${id}`);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await Promise.all(workers.map((w) => w.close()));
      clearInterval(timer);
      try {
        await withdrawHeartbeat(conn, id);
      } catch {
        // the key expires by itself
      }
      conn.disconnect();
      for (const p of pipelines) await p.close();
      finish();
    })();
    return closing;
  };
  stopped.catch(async () => {
    clearInterval(timer);
    await Promise.all(workers.map((w) => w.close(true).catch(() => {})));
    for (const p of pipelines) await p.close();
  });
  return { info, close, stopped };
}

// Main-thread side of the onnxruntime worker: a promise per request, timing of every run (time in onnxruntime vs
// round trip) so the overhead of the thread hop is measured, and the worker is unref'd while idle so that an open
// pipeline never keeps the process alive.
import { Worker } from 'node:worker_threads';
import { BackendUnavailableError, InputError, ModelError } from '../errors.js';
import type {
  Feed,
  ModelSource,
  Request,
  Response,
  RunResult,
  SessionConfig,
  SessionInfo,
  WireTensor,
  WorkerFailure,
} from './worker-protocol.js';
import { sessionWorkerStackMb } from './worker-stack.js';

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
type Body = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export interface HostStats {
  runs: number;
  /** total milliseconds inside onnxruntime's session.run */
  ortMs: number;
  /** total milliseconds in the worker around session.run (dtype conversion, output copies) */
  workerMs: number;
  /** total milliseconds from posting a run to receiving its result, on the main thread */
  roundTripMs: number;
}

/** The lib/errors.ts error a worker failure stands for; an internal one is a plain Error (a bug). */
function rebuildFailure(f: WorkerFailure): Error {
  switch (f.kind) {
    case 'model':
      return new ModelError(f.file, f.message);
    case 'input':
      return new InputError(f.argument, f.message);
    case 'backend':
      return new BackendUnavailableError(f.option, f.value, f.message);
    case 'internal':
      return new Error(f.message);
  }
}

export class SessionHost {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextKey = 1;
  private closed = false;
  private failure: Error | null = null;
  readonly stats: HostStats = { runs: 0, ortMs: 0, workerMs: 0, roundTripMs: 0 };
  private readonly live = new Set<string>();

  constructor() {
    this.worker = new Worker(new URL('./ort-worker.js', import.meta.url), {
      resourceLimits: { stackSizeMb: sessionWorkerStackMb() },
    });
    this.worker.unref();
    this.worker.on('message', (res: Response) => {
      const p = this.pending.get(res.id);
      if (p === undefined) return;
      this.pending.delete(res.id);
      if (this.pending.size === 0) this.worker.unref();
      if (res.ok) p.resolve(res.result);
      else p.reject(rebuildFailure(res.failure));
    });
    const fail = (err: Error): void => {
      this.failure = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`onnxruntime worker exited with code ${code}`));
    });
  }

  private call<T>(body: Body, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.closed) return Promise.reject(new Error('session host is closed'));
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({ ...body, id }, transfer);
    });
  }

  /** A fresh key for a session. */
  newKey(prefix: string): string {
    return `${prefix}#${this.nextKey++}`;
  }

  /**
   * Creates session `key` (replacing any session of that key). `transfer`: buffers of `source.modelBytes` to hand
   * to the worker instead of copying them (unusable here afterwards), so that a model held in memory is not
   * duplicated for the time of the load.
   */
  load(key: string, source: ModelSource, config: SessionConfig, label: string, transfer: ArrayBuffer[] = []): Promise<SessionInfo> {
    return this.call<SessionInfo>({ op: 'load', key, source, config, label }, transfer).then((info) => {
      this.live.add(key);
      return info;
    });
  }

  /**
   * The keys of the sessions that exist in the worker now (created and not released), e.g. `['text_encoder#1',
   * 'unet#2']`: what holds weights and buffers (docs/memory.md). A copy.
   */
  liveSessions(): string[] {
    return [...this.live];
  }

  /**
   * Runs session `key`. Feed arrays are copied to the worker (the caller keeps them) unless `transfer` lists them.
   * `outputs`: only these outputs (default all).
   */
  async run(key: string, feeds: Record<string, Feed>, transfer: ArrayBuffer[] = [], outputs?: string[]): Promise<RunResult> {
    const t0 = performance.now();
    const r = await this.call<RunResult>({ op: 'run', key, feeds, ...(outputs !== undefined ? { outputs } : {}) }, transfer);
    this.stats.runs++;
    this.stats.ortMs += r.runMs;
    this.stats.workerMs += r.workerMs;
    this.stats.roundTripMs += performance.now() - t0;
    return r;
  }

  /** Keeps a tensor in the worker for later runs (`{ ref }` feeds): sent once instead of at every step. */
  stash(ref: string, tensor: WireTensor): Promise<void> {
    return this.call<void>({ op: 'stash', ref, tensor });
  }

  unstash(ref: string): Promise<void> {
    return this.call<void>({ op: 'unstash', ref });
  }

  release(key: string): Promise<void> {
    this.live.delete(key);
    return this.call<void>({ op: 'release', key });
  }

  /** Ends the worker and every session in it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker.terminate();
  }
}

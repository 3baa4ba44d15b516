// Messages between the main thread (session-host.ts) and the onnxruntime worker (ort-worker.ts).
export type Device = 'cpu' | 'cuda';
export type WireType = 'float32' | 'float16' | 'int32' | 'int64';

/** A tensor crossing the thread boundary. float16/int64 travel as float32/Int32 and are converted in the worker. */
export interface WireTensor {
  dims: number[];
  data: Float32Array | Int32Array;
}

/** Where a model comes from: a file (external data resolved next to it), or bytes plus in-memory external files. */
export type ModelSource = { path: string } | { modelBytes: Uint8Array; externalData?: { path: string; data: Uint8Array }[] };

export interface SessionConfig {
  device: Device;
  threads?: number;
  /** let onnxruntime's intra-op threads spin while waiting (default false) */
  spinning?: boolean;
  /**
   * keep onnxruntime's CPU memory arena (enableCpuMemArena) and its memory-pattern plan (enableMemPattern); both
   * keep a run's peak buffers allocated after it ends. Default true (onnxruntime's default).
   */
  arena?: boolean;
}

export interface ValueInfo {
  name: string;
  /** onnxruntime's type name: 'float32', 'float16', 'int32', 'int64', … */
  type: string;
  /** numbers for fixed dims, strings for symbolic ones */
  shape: (number | string)[];
}

export interface SessionInfo {
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

/** A feed is a tensor, or a reference to one stored in the worker with `stash` (sent once, used by many runs). */
export type Feed = WireTensor | { ref: string };

export type Request =
  | { id: number; op: 'load'; key: string; source: ModelSource; config: SessionConfig; label: string }
  | { id: number; op: 'run'; key: string; feeds: Record<string, Feed>; outputs?: string[] }
  | { id: number; op: 'stash'; ref: string; tensor: WireTensor }
  | { id: number; op: 'unstash'; ref: string }
  | { id: number; op: 'release'; key: string };

export interface RunResult {
  outputs: Record<string, { dims: number[]; data: Float32Array }>;
  /** milliseconds inside session.run (onnxruntime) */
  runMs: number;
  /** milliseconds in the worker around it: feed conversion, output conversion */
  workerMs: number;
}

/**
 * A failure in the worker, by kind: classes do not cross postMessage, so lib/errors.ts's error is described here
 * and rebuilt on the main thread ('internal' becomes a plain Error: a bug, not the caller's or the model's fault).
 */
export type WorkerFailure =
  | { kind: 'model'; message: string; file: string }
  | { kind: 'input'; message: string; argument: string }
  | { kind: 'backend'; message: string; option: string; value: string }
  | { kind: 'internal'; message: string };

export type Response = { id: number; ok: true; result: unknown } | { id: number; ok: false; failure: WorkerFailure };

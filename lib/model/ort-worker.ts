// The onnxruntime worker thread: owns the sessions so that their synchronous run() (onnxruntime-node runs a
// session on the calling thread) never stalls the main thread's event loop (progress bar, signals, other work).
// Its errors are lib/errors.ts classes, sent back as a WorkerFailure and rebuilt by session-host.ts.
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { BackendUnavailableError, InputError, ModelError } from '../errors.js';
import { float16ToFloat32 as fromHalf, float32ToFloat16 as toHalf } from './onnx/float16.js';
import { releaseArrayBuffer } from './release-buffer.js';
import type {
  Feed,
  ModelSource,
  Request,
  Response,
  RunResult,
  SessionConfig,
  SessionInfo,
  ValueInfo,
  WireTensor,
  WorkerFailure,
} from './worker-protocol.js';

if (parentPort === null) throw new Error('ort-worker.js must run in a worker thread');
const port = parentPort;

// onnxruntime's own log lines (e.g. a failed CUDA provider load) would precede the clear error this worker sends.
ort.env.logLevel = 'fatal';

const sessions = new Map<string, { session: ort.InferenceSession; types: Map<string, string>; label: string }>();
const stash = new Map<string, { tensor: WireTensor; cache: Map<string, ort.Tensor> }>();

function describe(meta: readonly ort.InferenceSession.ValueMetadata[]): ValueInfo[] {
  return meta.map((m) =>
    m.isTensor ? { name: m.name, type: m.type, shape: [...m.shape] } : { name: m.name, type: 'non-tensor', shape: [] },
  );
}

function cudaMissing(message: string): boolean {
  return /providers_cuda|Failed to load shared library|CUDA|cuda/i.test(message);
}

async function load(source: ModelSource, config: SessionConfig, label: string): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: config.device === 'cuda' ? [{ name: 'cuda' }, 'cpu'] : ['cpu'],
    graphOptimizationLevel: 'all',
    logSeverityLevel: 4, // errors reach the caller as exceptions; onnxruntime's own log would repeat them
    // No busy-waiting between ops: on a machine shared with other work, spinning threads steal the cores that
    // the other intra-op threads need (measured: see README, "Threads and devices").
    extra: { session: { intra_op: { allow_spinning: config.spinning === true ? '1' : '0' } } },
  };
  if (config.threads !== undefined) options.intraOpNumThreads = config.threads;
  if (config.arena === false) {
    options.enableCpuMemArena = false;
    options.enableMemPattern = false;
  }
  try {
    if ('path' in source) return await ort.InferenceSession.create(source.path, options);
    if (source.externalData !== undefined) options.externalData = source.externalData.map((e) => ({ path: e.path, data: e.data }));
    const session = await ort.InferenceSession.create(source.modelBytes, options);
    // The session has parsed the model into its own tensors; these bytes are this thread's (transferred or
    // copied to it with the request) and unreachable once this returns, but a worker that only waits on requests
    // would keep them until some later collection: one more copy of the model's weights (docs/memory.md).
    // External data buffers are left alone (onnxruntime may read them for the session's life).
    if (!(source.externalData ?? []).some((e) => e.data.buffer === source.modelBytes.buffer)) releaseArrayBuffer(source.modelBytes.buffer);
    return session;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (config.device === 'cuda' && cudaMissing(message)) {
      throw new BackendUnavailableError(
        'device',
        'cuda',
        `onnxruntime-node's CUDA execution provider is not installed or cannot load (${message.split('\n')[0]}). ` +
          'Install it with ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js (needs CUDA 12 + cuDNN 9; docs/install.md)',
      );
    }
    throw new ModelError(label, `cannot load ${label}: ${message.split('\n')[0]}`);
  }
}

function toOrt(t: WireTensor, type: string, name: string, label: string): ort.Tensor {
  switch (type) {
    case 'float32':
      return new ort.Tensor('float32', t.data instanceof Float32Array ? t.data : Float32Array.from(t.data), t.dims);
    case 'float16':
      return new ort.Tensor('float16', toHalf(t.data), t.dims);
    case 'int32':
      return new ort.Tensor('int32', t.data instanceof Int32Array ? t.data : Int32Array.from(t.data, Math.round), t.dims);
    case 'int64':
      return new ort.Tensor(
        'int64',
        BigInt64Array.from(t.data, (v) => BigInt(Math.round(v))),
        t.dims,
      );
    default:
      throw new ModelError(label, `${label}: input ${name} of type ${type} is not supported`);
  }
}

function fromOrt(t: ort.Tensor, name: string, label: string): { dims: number[]; data: Float32Array } {
  const dims = [...t.dims];
  // A copy: onnxruntime's output buffers may be external memory, which cannot be transferred between threads.
  if (t.type === 'float32') return { dims, data: new Float32Array(t.data as Float32Array) };
  if (t.type === 'float16') return { dims, data: fromHalf(t.data as Uint16Array) };
  throw new ModelError(label, `${label}: output ${name} has type ${t.type}, expected float32 or float16`);
}

async function handle(req: Request): Promise<{ result: unknown; transfer: ArrayBuffer[] }> {
  switch (req.op) {
    case 'load': {
      const session = await load(req.source, req.config, req.label);
      const info: SessionInfo = { inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata) };
      const old = sessions.get(req.key);
      if (old !== undefined) await old.session.release();
      sessions.set(req.key, { session, types: new Map(info.inputs.map((i) => [i.name, i.type])), label: req.label });
      return { result: info, transfer: [] };
    }
    case 'run': {
      const entry = sessions.get(req.key);
      if (entry === undefined) throw new Error(`no session '${req.key}' in the worker`);
      const t0 = performance.now();
      const feeds: Record<string, ort.Tensor> = {};
      for (const [name, feed] of Object.entries(req.feeds) as [string, Feed][]) {
        const type = entry.types.get(name);
        if (type === undefined) throw new InputError('feeds', `${entry.label} has no input named '${name}'`, { received: name });
        if ('ref' in feed) {
          const s = stash.get(feed.ref);
          if (s === undefined) throw new Error(`no stashed tensor '${feed.ref}'`);
          let t = s.cache.get(type);
          if (t === undefined) {
            t = toOrt(s.tensor, type, name, entry.label);
            s.cache.set(type, t);
          }
          feeds[name] = t;
        } else feeds[name] = toOrt(feed, type, name, entry.label);
      }
      const t1 = performance.now();
      const raw = req.outputs !== undefined ? await entry.session.run(feeds, req.outputs) : await entry.session.run(feeds);
      const t2 = performance.now();
      const outputs: RunResult['outputs'] = {};
      const transfer: ArrayBuffer[] = [];
      for (const [name, t] of Object.entries(raw)) {
        outputs[name] = fromOrt(t, name, entry.label);
        transfer.push(outputs[name]!.data.buffer as ArrayBuffer);
      }
      const t3 = performance.now();
      const result: RunResult = { outputs, runMs: t2 - t1, workerMs: t1 - t0 + (t3 - t2) };
      return { result, transfer };
    }
    case 'stash':
      stash.set(req.ref, { tensor: req.tensor, cache: new Map() });
      return { result: null, transfer: [] };
    case 'unstash':
      stash.delete(req.ref);
      return { result: null, transfer: [] };
    case 'release': {
      const entry = sessions.get(req.key);
      sessions.delete(req.key);
      if (entry !== undefined) await entry.session.release();
      return { result: null, transfer: [] };
    }
  }
}

function describeFailure(err: unknown): WorkerFailure {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof ModelError) return { kind: 'model', message, file: err.file };
  if (err instanceof InputError) return { kind: 'input', message, argument: err.argument };
  if (err instanceof BackendUnavailableError) return { kind: 'backend', message, option: err.option, value: err.value };
  return { kind: 'internal', message };
}

port.on('message', (req: Request) => {
  handle(req).then(
    ({ result, transfer }) => port.postMessage({ id: req.id, ok: true, result } satisfies Response, transfer),
    (err: unknown) => port.postMessage({ id: req.id, ok: false, failure: describeFailure(err) } satisfies Response),
  );
});

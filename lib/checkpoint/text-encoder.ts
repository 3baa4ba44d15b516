// The CLIP text encoder of a checkpoint, run on onnxruntime-node from the checkpoint's own tensors, in fp32
// whatever their stored dtype (F32, F16, BF16). The tensors are read by offset, one at a time and in chunks, and
// written as float32 (transposed where the graph wants [in, out]) to ONE TEMPORARY FILE: a folder made with
// mkdtemp in the OS temp folder holding the graph (lib/checkpoint/clip-text-graph.ts, a few KB) and its external
// data (the encoder in fp32: 0.49 GB for CLIP ViT-L/14). onnxruntime maps that file instead of copying it into its
// own memory (measured: docs/checkpoints.md), which is why it is a file and not a buffer: a buffer would be held
// twice while the session is created. onnxruntime refuses external data outside the model's folder and follows
// symlinks, so the checkpoint itself cannot be pointed at. The folder is removed as soon as the session exists
// (on Linux and macOS the mapping outlives the name) or, where an open file cannot be removed, at close().
// Nothing is cached between runs. The sha256 of the values written is the text half of the model's fingerprint.
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { writeAllAt } from '../fs/write-at.js';
import { DataType, encodeModel, type TensorProto } from '../model/onnx/index.js';
import { SessionHost } from '../model/session-host.js';
import type { Device } from '../model/worker-protocol.js';
import { CheckpointError } from './checkpoint-error.js';
import { buildClipTextModel, CLIP_TEXT_INPUT, CLIP_TEXT_OUTPUT, clipTextWeights, type GraphWeight } from './clip-text-graph.js';
import type { Checkpoint, TextEncoderConfig } from './open-checkpoint.js';
import { bytesToFloat32, type FloatDtype, SAFETENSORS_DTYPE_BITS } from './safetensors-file.js';

export interface CheckpointTextEncoderOptions {
  /** 'cpu' (default) or 'cuda' */
  device?: Device;
  /** onnxruntime intra-op threads (default: onnxruntime's choice) */
  threads?: number;
  /** a worker to run the session in (default: a new one, closed by close()) */
  host?: SessionHost;
  /** the folder the temporary graph + weights folder is made in (default os.tmpdir()) */
  tempDir?: string;
}

/** Where the time of opening went, in milliseconds. */
export interface TextEncoderTimings {
  /** reading the checkpoint's tensors and writing them as fp32 */
  readMs: number;
  /** creating the onnxruntime session */
  loadMs: number;
}

/** Values per chunk when converting a large tensor (16 MB of float32): memory stays flat whatever the tensor's size. */
const CHUNK_VALUES = 4 * 1024 * 1024;
/** Tensors start at multiples of this in the weights file (the page size, so a mapping can start on any tensor). */
const ALIGN = 4096;
/** Prompts per onnxruntime run: bounds the attention buffers (batch × heads × 77 × 77) of a large edit --batch chunk. */
const RUN_BATCH = 32;

function readAt(fd: number, into: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, into.length - done, position + done);
    if (n === 0) throw new CheckpointError(file, `${file} ended at byte ${position + done}: it was truncated after it was opened`);
    done += n;
  }
}

/** [rows, cols] row-major → [cols, rows] row-major. */
function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

function externalTensor(w: GraphWeight, offset: number): TensorProto {
  const bytes = w.dims.reduce((a, b) => a * b, 1) * 4;
  return {
    name: w.name,
    dims: w.dims,
    dataType: DataType.FLOAT,
    floatData: [],
    int32Data: [],
    stringData: [],
    int64Data: [],
    doubleData: [],
    uint64Data: [],
    externalData: [
      { key: 'location', value: 'weights.bin' },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(bytes) },
    ],
    dataLocation: 1,
  };
}

/**
 * Writes the encoder's tensors as fp32 into `weightsPath` in clipTextWeights order (ALIGN-aligned), reading each
 * from the checkpoint by offset in chunks; returns each tensor's offset and the sha256 of the values.
 */
function writeWeights(ckpt: Checkpoint, weightsPath: string): { offsets: Map<string, number>; sha256: string } {
  const te = ckpt.textEncoder;
  const file = te.file;
  const hash = createHash('sha256');
  hash.update(`time-edit clip text fp32 1\n${JSON.stringify(te.config)}\n`);
  const offsets = new Map<string, number>();
  const src = openSync(file.path, 'r');
  const dst = openSync(weightsPath, 'w');
  try {
    let at = 0;
    for (const w of clipTextWeights(te.config)) {
      const e = file.tensors.get(te.key(w.name))!;
      const dtype = e.dtype as FloatDtype;
      const size = SAFETENSORS_DTYPE_BITS[dtype] / 8;
      at = Math.ceil(at / ALIGN) * ALIGN;
      offsets.set(w.name, at);
      hash.update(`${w.name} [${w.dims}]\n`);
      const count = (e.end - e.begin) / size;
      if (w.transpose) {
        const raw = new Uint8Array(e.end - e.begin);
        readAt(src, raw, file.dataStart + e.begin, file.path);
        const [inW, outW] = w.dims as [number, number];
        const t = transpose(bytesToFloat32(raw, dtype), outW, inW);
        const bytes = new Uint8Array(t.buffer);
        hash.update(bytes);
        writeAllAt(dst, bytes, at);
      } else {
        const raw = new Uint8Array(Math.min(count, CHUNK_VALUES) * size);
        for (let done = 0; done < count; done += CHUNK_VALUES) {
          const n = Math.min(CHUNK_VALUES, count - done);
          const part = raw.subarray(0, n * size);
          readAt(src, part, file.dataStart + e.begin + done * size, file.path);
          const v = bytesToFloat32(part, dtype);
          const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
          hash.update(bytes);
          writeAllAt(dst, bytes, at + done * 4);
        }
      }
      at += count * 4;
    }
  } finally {
    closeSync(src);
    closeSync(dst);
  }
  return { offsets, sha256: hash.digest('hex') };
}

/**
 * A checkpoint's CLIP text encoder in an onnxruntime session (see the file's header comment).
 * Example: `const enc = await CheckpointTextEncoder.open(openCheckpoint('sd15.safetensors')); const e = await enc.encode(ids, 1); await enc.close();`
 */
export class CheckpointTextEncoder {
  private closed = false;

  private constructor(
    private readonly host: SessionHost,
    private readonly ownsHost: boolean,
    private readonly key: string,
    private tempFolder: string | undefined,
    readonly config: TextEncoderConfig,
    /** sha256 of the encoder's fp32 values (names, shapes and values in graph order) */
    readonly weightsSha256: string,
    readonly timings: TextEncoderTimings,
  ) {}

  /** Builds the graph, writes the weights (temporary) and creates the session. */
  static async open(ckpt: Checkpoint, options: CheckpointTextEncoderOptions = {}): Promise<CheckpointTextEncoder> {
    const t0 = performance.now();
    const folder = mkdtempSync(join(options.tempDir ?? tmpdir(), 'time-edit-clip-'));
    const host = options.host ?? new SessionHost();
    let ok = false;
    try {
      const weightsPath = join(folder, 'weights.bin');
      const { offsets, sha256 } = writeWeights(ckpt, weightsPath);
      const model = buildClipTextModel(ckpt.textEncoder.config, (w) => externalTensor(w, offsets.get(w.name)!));
      const modelPath = join(folder, 'model.onnx');
      writeFileSync(modelPath, encodeModel(model));
      const t1 = performance.now();
      const key = host.newKey('checkpoint-text-encoder');
      const label = `the text encoder of ${ckpt.path}`;
      await host.load(
        key,
        { path: modelPath },
        { device: options.device ?? 'cpu', ...(options.threads !== undefined ? { threads: options.threads } : {}) },
        label,
      );
      const t2 = performance.now();
      let keep: string | undefined;
      try {
        rmSync(folder, { recursive: true, force: true });
      } catch {
        keep = folder; // an open file cannot be removed here (Windows): close() does it
      }
      ok = true;
      return new CheckpointTextEncoder(host, options.host === undefined, key, keep, ckpt.textEncoder.config, sha256, {
        readMs: t1 - t0,
        loadMs: t2 - t1,
      });
    } finally {
      if (!ok) {
        rmSync(folder, { recursive: true, force: true });
        if (options.host === undefined) await host.close();
      }
    }
  }

  /** Sequence length (the position embedding's rows: 77). */
  get positions(): number {
    return this.config.positions;
  }

  /**
   * last_hidden_state of `batch` rows of token ids ([batch, positions] row-major, each id < vocabSize), as
   * [batch, positions, width] float32. Example: `await enc.encode(tokenizer.encode('a cat').ids, 1)`.
   */
  async encode(ids: Int32Array, batch: number): Promise<Float32Array> {
    if (this.closed) throw new Error('the text encoder is closed');
    const L = this.config.positions;
    if (!Number.isSafeInteger(batch) || batch < 1 || ids.length !== batch * L)
      throw new InputError('ids', `ids must hold batch × ${L} token ids, got ${ids.length} for batch ${batch}`);
    for (let i = 0; i < ids.length; i++)
      if (!(ids[i]! >= 0 && ids[i]! < this.config.vocabSize))
        throw new InputError(
          'ids',
          `token id ${ids[i]} is outside the text encoder's vocabulary of ${this.config.vocabSize}: is the tokenizer the model's?`,
        );
    const w = this.config.width;
    const out = new Float32Array(batch * L * w);
    for (let b = 0; b < batch; b += RUN_BATCH) {
      const n = Math.min(RUN_BATCH, batch - b);
      const part = ids.slice(b * L, (b + n) * L);
      const r = await this.host.run(this.key, { [CLIP_TEXT_INPUT]: { dims: [n, L], data: part } }, [part.buffer]);
      const o = r.outputs[CLIP_TEXT_OUTPUT]!;
      out.set(o.data, b * L * w);
    }
    return out;
  }

  /** Releases the session (and the worker when this encoder made it), and removes a temporary folder left. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.ownsHost) await this.host.close();
      else await this.host.release(this.key);
    } finally {
      if (this.tempFolder !== undefined) rmSync(this.tempFolder, { recursive: true, force: true });
      this.tempFolder = undefined;
    }
  }
}

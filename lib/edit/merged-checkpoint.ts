// The edited model as a safetensors file users load anywhere (`--save-checkpoint`): the input file with only its
// 32 cross-attention K/V tensors replaced by W·M, each in its own dtype, and every other tensor byte for byte. The
// safetensors `data_offsets` are relative to the data buffer (https://github.com/huggingface/safetensors, "Format"),
// so the header can grow (the edit is recorded in `__metadata__`) while every tensor keeps its offsets: the data
// buffer is streamed across in chunks with positional reads and writes (two buffers, the next read overlapping the
// current write), the edited tensors are written over their ranges, and the file is put in place atomically
// (lib/fs/durable-file.ts: temp file, fsync, rename). Memory stays at the chunk buffers plus the K/V weights
// (~77 MB in float32 for SD 1.x), whatever the file's size.
import { closeSync, fstatSync, openSync, read, write, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import type { Checkpoint, KvTensor } from '../checkpoint/open-checkpoint.js';
import { readKvWeight } from '../checkpoint/open-checkpoint.js';
import type { FloatDtype, SafetensorsFile } from '../checkpoint/safetensors-file.js';
import { openAtomicFileSync } from '../fs/durable-file.js';
import { FileError } from '../fs/file-error.js';
import { addonAvailable } from '../solver/backend.js';
import { patchWeights } from '../solver/native.js';
import { type Edit, EditError, stepEdits, transformWeightRows } from './edit.js';
import { stepsMetadata } from './lora-file.js';

const readAsync = promisify(read);
const writeAsync = promisify(write);

/**
 * 1 MiB: the size of each of the two copy buffers. Small enough to stay in the CPU's cache between the read and the
 * write: on a 1 GB file, 1–2 MiB chunks copied as fast as `cp`, 16–64 MiB ones took 2–4× as long (docs/lora.md).
 */
export const COPY_CHUNK_BYTES = 1024 * 1024;

/** The `time_edit.format` value of a checkpoint this tool edited. */
export const MERGED_FORMAT = 'time-edit-merged/1';

/**
 * float32 values as the little-endian bytes of `dtype`, rounding to nearest even (F16 and BF16; values beyond
 * F16's range become ±Inf, as PyTorch's `.half()` does).
 *
 * @example
 *   float32ToBytes(new Float32Array([1]), 'F16');   // Uint8Array [0, 60]
 */
export function float32ToBytes(values: Float32Array, dtype: FloatDtype): Uint8Array {
  if (dtype === 'F32') {
    const out = new Uint8Array(values.length * 4);
    const view = new DataView(out.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i]!, true);
    return out;
  }
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  for (let i = 0; i < values.length; i++) {
    f[0] = values[i]!;
    const x = bits[0]!;
    view.setUint16(2 * i, dtype === 'BF16' ? bf16Bits(x) : f16Bits(x), true);
  }
  return out;
}

/** float32 bits → bfloat16 bits, round to nearest even (NaN stays a quiet NaN). */
function bf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bits → IEEE binary16 bits, round to nearest even, subnormals included. */
function f16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1) === 1)) m++;
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

/** The edited values W·M of one K/V tensor as float32 (the native addon when built, float64 TypeScript otherwise). */
async function editedWeight(edit: Edit, t: KvTensor): Promise<Float32Array | undefined> {
  const steps = edit.steps.filter((s) => stepEdits(s, t.kind, t.layerIndex));
  if (steps.length === 0) return undefined;
  const w = readKvWeight(t);
  const rows = t.shape[0];
  if (t.shape[1] !== edit.d) throw new EditError(`${t.key} takes width ${t.shape[1]}, the edit ${edit.d}`);
  if (!addonAvailable()) return transformWeightRows(edit, w, t.kind, t.layerIndex);
  let cur = w;
  for (const s of steps) cur = await patchWeights({ data: cur, rows }, { d: edit.d, lowRank: { D: s.D, G: s.G, rows: s.rows } });
  return cur;
}

/** The metadata entries recording an edit in an edited checkpoint (strings, as the format requires). */
export function editMetadata(edit: Edit, fingerprint: string): Record<string, string> {
  const first = edit.steps[0]?.pairs[0];
  return {
    'time_edit.format': MERGED_FORMAT,
    'time_edit.fingerprint': fingerprint,
    'time_edit.source': first?.source ?? '',
    'time_edit.destination': first?.destination ?? '',
    'time_edit.lambda': [...new Set(edit.steps.map((s) => s.lambda))].join(','),
    'time_edit.steps': stepsMetadata(edit),
  };
}

/** The header bytes (length + JSON, padded with spaces to 8) of `file` with `metadata` merged into `__metadata__`. */
function rewrittenHeader(file: SafetensorsFile, metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { ...file.metadata, ...metadata } };
  for (const t of file.tensors.values()) header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [t.begin, t.end] };
  let json = JSON.stringify(header);
  const length = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + length) % 8)) % 8);
  const bytes = Buffer.alloc(8 + Buffer.byteLength(json, 'utf8'));
  bytes.writeBigUInt64LE(BigInt(bytes.length - 8), 0);
  bytes.write(json, 8, 'utf8');
  return bytes;
}

/**
 * Writes `file` to `outPath` with its header's metadata extended by `metadata` and the tensors named in
 * `replacementsToCome` (a map, or a promise of one, computed while the copy runs) overwritten by the given bytes
 * (each exactly its range's length), every other byte copied; atomically, streamed in COPY_CHUNK_BYTES chunks.
 * The source must not change while it is copied.
 *
 * @example
 *   await rewriteSafetensors(openSafetensorsFile('in.safetensors'), new Map([[key, bytes]]), { note: 'x' }, 'out.safetensors');
 */
export async function rewriteSafetensors(
  file: SafetensorsFile,
  replacementsToCome: ReadonlyMap<string, Uint8Array> | Promise<ReadonlyMap<string, Uint8Array>>,
  metadata: Record<string, string>,
  outPath: string,
  options: { chunkBytes?: number } = {},
): Promise<void> {
  // The replacements may still be being computed: the copy runs meanwhile, and they are written over it at the end.
  const pending = Promise.resolve(replacementsToCome);
  pending.catch(() => undefined); // awaited below; a rejection before then must not be reported as unhandled
  const header = rewrittenHeader(file, metadata);
  const chunk = options.chunkBytes ?? COPY_CHUNK_BYTES;
  let src: number;
  try {
    src = openSync(file.path, 'r');
  } catch (err) {
    throw new FileError(`cannot read ${file.path}: ${(err as Error).message}`, file.path, { cause: err });
  }
  const out = openAtomicFileSync(outPath);
  try {
    if (fstatSync(src).size !== file.size) throw new EditError(`${file.path} changed size since it was opened`);
    writeSync(out.fd, header, 0, header.length, 0);
    const dataLength = file.size - file.dataStart;
    const buffers = [Buffer.allocUnsafe(chunk), Buffer.allocUnsafe(chunk)];
    let pendingWrite: Promise<unknown> = Promise.resolve();
    for (let at = 0, i = 0; at < dataLength; at += chunk, i++) {
      const buf = buffers[i % 2]!;
      const want = Math.min(chunk, dataLength - at);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await readAsync(src, buf, got, want - got, file.dataStart + at + got);
        if (bytesRead === 0) throw new EditError(`${file.path} ended early (it changed while being copied)`);
        got += bytesRead;
      }
      await pendingWrite; // the other buffer is free again
      pendingWrite = writeFully(out.fd, buf, want, header.length + at);
    }
    await pendingWrite;
    const replacements = await pending;
    for (const [name, bytes] of replacements) {
      const t = file.tensors.get(name);
      if (t === undefined) throw new EditError(`${file.path} has no tensor ${name} to replace`);
      if (bytes.length !== t.end - t.begin) throw new EditError(`${name}: ${bytes.length} bytes for a range of ${t.end - t.begin}`);
    }
    for (const [name, bytes] of replacements) {
      const t = file.tensors.get(name)!;
      await writeFully(out.fd, bytes, bytes.length, header.length + t.begin);
    }
    if (fstatSync(src).size !== file.size) throw new EditError(`${file.path} changed size while it was copied`);
  } catch (err) {
    out.discard();
    throw err instanceof EditError || err instanceof FileError
      ? err
      : new FileError(`cannot write ${outPath}: ${(err as Error).message}`, outPath, { cause: err });
  } finally {
    closeSync(src);
  }
  out.commit();
}

async function writeFully(fd: number, buf: Uint8Array, length: number, position: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const { bytesWritten } = await writeAsync(fd, buf, done, length - done, position + done);
    done += bytesWritten;
  }
}

/** The bytes of every K/V tensor of `checkpoint` in `file` that the edit changes, in the tensor's dtype. */
export async function editedKvTensors(checkpoint: Checkpoint, edit: Edit, file: SafetensorsFile): Promise<Map<string, Uint8Array>> {
  if (edit.d !== checkpoint.d) throw new EditError(`the edit has width ${edit.d}, ${checkpoint.path} has text width ${checkpoint.d}`);
  const out = new Map<string, Uint8Array>();
  for (const t of checkpoint.kv) {
    if (t.file !== file) continue;
    const w = await editedWeight(edit, t);
    if (w !== undefined) out.set(t.key, float32ToBytes(w, t.dtype));
  }
  return out;
}

/**
 * `--save-checkpoint`: the single-file checkpoint with the edit merged into its K/V weights (see the header comment).
 *
 * @example
 *   await writeMergedCheckpoint(openCheckpoint('v1-5.safetensors'), edit, 'v1-5-purple.safetensors', { fingerprint });
 */
export async function writeMergedCheckpoint(
  checkpoint: Checkpoint,
  edit: Edit,
  outPath: string,
  options: { fingerprint: string; chunkBytes?: number },
): Promise<void> {
  if (checkpoint.kind !== 'single-file')
    throw new EditError(`${checkpoint.path} is a diffusers folder: write it with writeEditedDiffusersFolder`);
  const file = checkpoint.kv[0]!.file;
  if (edit.d !== checkpoint.d) throw new EditError(`the edit has width ${edit.d}, ${checkpoint.path} has text width ${checkpoint.d}`);
  await rewriteSafetensors(file, editedKvTensors(checkpoint, edit, file), editMetadata(edit, options.fingerprint), outPath, options);
}

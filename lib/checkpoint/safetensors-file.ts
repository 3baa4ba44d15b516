// A safetensors file opened for reading tensors one at a time, by offset, without reading the file: only the
// 8-byte header length and the JSON header are read at open (a checkpoint is 2–4 GB, an edit needs ~0.6 GB of it).
// Format (https://github.com/huggingface/safetensors, README "Format"; validation as its `validate()`):
// u64 little-endian header length N, N bytes of UTF-8 JSON starting with `{`, then the data buffer; each tensor's
// `data_offsets` [begin, end) are relative to the start of the buffer; `__metadata__` is a string → string map.
// The header is checked as strictly as the reference implementation (no duplicate keys, known dtypes, byte length
// = element count × dtype size, ranges tiling the buffer with no overlap, hole or trailing byte), so a damaged or
// crafted file is refused naming the file, the tensor and the rule instead of being half-read. Offsets need not be
// aligned (files written before safetensors 0.3.1 are not): every read copies into a fresh, aligned buffer.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { float16BitsToNumber } from '../model/onnx/index.js';
import { CheckpointError } from './checkpoint-error.js';

/** The dtypes of the format (safetensors `enum Dtype`) and their size in bits. */
export const SAFETENSORS_DTYPE_BITS = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;

export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPE_BITS;

/** The floating dtypes readTensorF32 converts (the ones SD checkpoints store their weights in). */
export type FloatDtype = 'F32' | 'F16' | 'BF16';

/** One tensor of the header: `begin`/`end` are byte offsets relative to `dataStart` (end exclusive). */
export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

/** What openSafetensorsFile read: the header only. Tensor bytes are at `dataStart + begin … dataStart + end`. */
export interface SafetensorsFile {
  path: string;
  /** the file's size in bytes when it was opened (reads check it is unchanged) */
  size: number;
  /** N, the JSON header's length in bytes */
  headerLength: number;
  /** 8 + N: where the data buffer starts in the file */
  dataStart: number;
  metadata: Record<string, string>;
  /** header order */
  tensors: Map<string, TensorEntry>;
}

/** 100 MB: the largest header accepted, the reference implementation's MAX_HEADER_SIZE. */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

/**
 * The keys of the top-level object of a JSON text already known to be valid, in order, duplicates kept:
 * JSON.parse keeps the last of duplicate keys silently, and the format forbids duplicates.
 */
export function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (ch === '{' || ch === '[') {
      depth++;
      expectKey = ch === '{' && depth === 1;
    } else if (ch === '}' || ch === ']') depth--;
    else if (ch === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.hasOwn(SAFETENSORS_DTYPE_BITS, value);
}

/**
 * Parses and validates a safetensors JSON header (the N bytes after the length) for a data buffer of `dataLength`
 * bytes; `file` names the file in errors. Throws CheckpointError naming the rule broken and the tensor.
 * Example: `parseSafetensorsHeader(Buffer.from('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'), 4, 'x.safetensors')`.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  file: string,
): { metadata: Record<string, string>; tensors: Map<string, TensorEntry> } {
  let text: string;
  let header: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    header = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError(file, `${file} has a corrupt safetensors header: ${(err as Error).message}`, { cause: err });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header) || !text.startsWith('{'))
    throw new CheckpointError(file, `${file} has a corrupt safetensors header: not a JSON object`);
  const seen = new Set<string>();
  for (const key of topLevelKeys(text)) {
    if (seen.has(key)) throw new CheckpointError(file, `${file} has a corrupt safetensors header: the key '${key}' appears more than once`);
    seen.add(key);
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorEntry>();
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
        throw new CheckpointError(file, `${file}: __metadata__ is not an object of strings`);
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new CheckpointError(file, `${file}: metadata '${k}' is ${typeof v}, not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const bad = (why: string): CheckpointError => new CheckpointError(file, `${file}: tensor ${name} ${why}`, { tensor: name });
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
      throw bad('is not an object with dtype, shape and data_offsets');
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDtype(e.dtype)) throw bad(`has an unknown dtype ${JSON.stringify(e.dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) throw bad('has a bad shape');
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0))
      throw bad('has bad data_offsets');
    const [begin, end] = offs as [number, number];
    if (end < begin) throw bad(`has data_offsets [${begin}, ${end}) that end before they begin`);
    const bits = (shape as number[]).reduce((x, y) => x * y, 1) * SAFETENSORS_DTYPE_BITS[e.dtype];
    if (bits % 8 !== 0 || end - begin !== bits / 8)
      throw bad(`holds ${end - begin} bytes, but shape [${shape}] of ${e.dtype} needs ${bits / 8}`);
    if (end > dataLength)
      throw bad(`data [${begin}, ${end}) is beyond the end of the file's data (${dataLength} bytes): the file is truncated or damaged`);
    tensors.set(name, { name, dtype: e.dtype, shape: shape as number[], begin, end });
  }
  // The ranges, sorted, must tile the buffer exactly: no overlap (two names for the same bytes), no hole, no tail.
  const sorted = [...tensors.values()].sort((x, y) => x.begin - y.begin || x.end - y.end);
  let at = 0;
  for (const r of sorted) {
    if (r.begin < at)
      throw new CheckpointError(
        file,
        `${file}: tensor ${r.name} data [${r.begin}, ${r.end}) overlaps another tensor's (which ends at ${at})`,
        {
          tensor: r.name,
        },
      );
    if (r.begin > at)
      throw new CheckpointError(file, `${file}: the data bytes [${at}, ${r.begin}) before tensor ${r.name} belong to no tensor`, {
        tensor: r.name,
      });
    at = r.end;
  }
  if (at !== dataLength)
    throw new CheckpointError(
      file,
      `${file}: ${dataLength - at} bytes after the last tensor (data ends at ${at}, the file's data at ${dataLength})`,
    );
  return { metadata, tensors };
}

/** Reads exactly `length` bytes at `position` into `into` (readSync may return fewer). */
function readFully(fd: number, into: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, Math.min(into.length - done, 1 << 30), position + done);
    if (n === 0)
      throw new CheckpointError(file, `${file} ended at byte ${position + done} while reading: it was truncated after it was opened`);
    done += n;
  }
}

function openRegular(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    // Non-blocking, so that a FIFO is refused at once instead of waiting for a writer.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new CheckpointError(path, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const s = fstatSync(fd);
  if (!s.isFile()) {
    closeSync(fd);
    throw new CheckpointError(path, `cannot read ${path}: it is ${s.isDirectory() ? 'a folder' : 'not a regular file'}`);
  }
  return { fd, size: s.size };
}

/**
 * Opens a safetensors file: reads and validates its header only (see the file's header comment). Throws
 * CheckpointError naming the file (and the tensor) when it is not a valid safetensors file.
 * Example: `const f = openSafetensorsFile('v1-5-pruned-emaonly.safetensors'); f.tensors.get('model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight')?.shape` → [320, 768].
 */
export function openSafetensorsFile(path: string): SafetensorsFile {
  const { fd, size } = openRegular(path);
  try {
    if (size < 8)
      throw new CheckpointError(path, `${path} is not a safetensors file: it has ${size} bytes, fewer than the 8 of the header length`);
    const lengthBytes = new Uint8Array(8);
    readFully(fd, lengthBytes, 0, path);
    const big = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (big < 2n) throw new CheckpointError(path, `${path} is not a safetensors file (header length ${big})`);
    if (big > BigInt(MAX_SAFETENSORS_HEADER_BYTES))
      throw new CheckpointError(
        path,
        `${path} is not a safetensors file (header length ${big} is over the format's limit of ${MAX_SAFETENSORS_HEADER_BYTES} bytes)`,
      );
    if (8n + big > BigInt(size))
      throw new CheckpointError(
        path,
        `${path} is not a safetensors file or is truncated: its header length ${big} is beyond the file's ${size} bytes`,
      );
    const headerLength = Number(big);
    const headerBytes = new Uint8Array(headerLength);
    readFully(fd, headerBytes, 8, path);
    const dataStart = 8 + headerLength;
    const { metadata, tensors } = parseSafetensorsHeader(headerBytes, size - dataStart, path);
    return { path, size, headerLength, dataStart, metadata, tensors };
  } finally {
    closeSync(fd);
  }
}

function entryOf(file: SafetensorsFile, name: string): TensorEntry {
  const e = file.tensors.get(name);
  if (e === undefined) throw new CheckpointError(file.path, `${file.path} has no tensor ${name}`, { tensor: name });
  return e;
}

/**
 * The raw little-endian bytes of one tensor, read by offset into a fresh (aligned) buffer. Throws CheckpointError
 * when the tensor is absent or the file changed size since it was opened.
 * Example: `readTensorBytes(f, 'cond_stage_model.transformer.text_model.final_layer_norm.weight').length` → 3072 (F32).
 */
export function readTensorBytes(file: SafetensorsFile, name: string): Uint8Array {
  const e = entryOf(file, name);
  const { fd, size } = openRegular(file.path);
  try {
    if (size !== file.size)
      throw new CheckpointError(file.path, `${file.path} changed since it was opened (${file.size} bytes then, ${size} now)`, {
        tensor: name,
      });
    const out = new Uint8Array(e.end - e.begin);
    readFully(fd, out, file.dataStart + e.begin, file.path);
    return out;
  } finally {
    closeSync(fd);
  }
}

let f16Table: Float32Array | undefined;

/** All 65536 float16 values as float32 (256 KB, built once): F16 tensors of 38 M values convert by lookup. */
function float16Table(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = float16BitsToNumber(h);
  }
  return f16Table;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Converts raw tensor bytes of dtype F32, F16 or BF16 to float32 (exact: every F16 and BF16 value is a float32).
 * Example: `bytesToFloat32(new Uint8Array([0, 60]), 'F16')` → Float32Array [1].
 */
export function bytesToFloat32(bytes: Uint8Array, dtype: FloatDtype): Float32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : Uint8Array.from(bytes);
  if (dtype === 'F32') {
    if (littleEndian && aligned === bytes && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength)
      return new Float32Array(bytes.buffer, 0, bytes.length / 4);
    const view = new DataView(aligned.buffer, aligned.byteOffset, aligned.byteLength);
    const out = new Float32Array(bytes.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  const n = bytes.length / 2;
  const out = new Float32Array(n);
  if (dtype === 'F16') {
    const table = float16Table();
    for (let i = 0; i < n; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
  } else {
    // BF16 is the top half of a float32: shift its bits into place.
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = ((bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16) >>> 0;
  }
  return out;
}

/** Whether a dtype is one readTensorF32 converts. */
export function isFloatDtype(dtype: SafetensorsDtype): dtype is FloatDtype {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

/**
 * One tensor's values as float32, whatever its stored float dtype (F32, F16, BF16), read by offset. Throws
 * CheckpointError naming the file and tensor when it is absent or of another dtype.
 * Example: `readTensorF32(f, 'model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight').length` → 1280 × 768.
 */
export function readTensorF32(file: SafetensorsFile, name: string): Float32Array {
  const e = entryOf(file, name);
  if (!isFloatDtype(e.dtype))
    throw new CheckpointError(
      file.path,
      `${file.path}: tensor ${name} is ${e.dtype}; only F32, F16 and BF16 tensors can be read as weights`,
      {
        tensor: name,
      },
    );
  return bytesToFloat32(readTensorBytes(file, name), e.dtype);
}

// Safetensors, read and written by hand: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__: {string: string}}, then the tensor bytes
// (offsets relative to the end of the header). Only the dtypes this project writes are supported. Reading enforces
// the rules of https://github.com/huggingface/safetensors (README, "Format"; the header limit of 100 MB is its
// MAX_HEADER_SIZE), so that a damaged or crafted file is refused with the rule it breaks instead of half-read.
import { topLevelKeys } from '../checkpoint/safetensors-file.js';
import { readRegularFileSync } from '../fs/bounded-read.js';
import { writeFileAtomicSync } from '../fs/durable-file.js';
import { TimeEditError } from '../errors.js';

export class SafetensorsError extends TimeEditError {
  override readonly name = 'SafetensorsError';
}

export interface NamedTensor {
  dtype: 'F32';
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContent {
  tensors: Map<string, NamedTensor>;
  metadata: Record<string, string>;
}

/** Serializes tensors + string metadata (tensor order kept; header padded with spaces to 8 bytes). */
export function encodeSafetensors(content: SafetensorsContent): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(content.metadata).length > 0) {
    for (const [k, v] of Object.entries(content.metadata))
      if (typeof v !== 'string') throw new SafetensorsError(`metadata value of '${k}' must be a string`);
    header.__metadata__ = content.metadata;
  }
  let offset = 0;
  for (const [name, t] of content.tensors) {
    if (name === '__metadata__') throw new SafetensorsError('a tensor cannot be named __metadata__');
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length)
      throw new SafetensorsError(`tensor ${name}: shape [${t.shape}] needs ${count} values, has ${t.data.length}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + 4 * count] };
    offset += 4 * count;
  }
  const json = JSON.stringify(header);
  const enc = new TextEncoder();
  let headerBytes = enc.encode(json);
  const pad = (8 - (headerBytes.length % 8)) % 8;
  if (pad > 0) headerBytes = enc.encode(json + ' '.repeat(pad));
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of content.tensors.values()) {
    for (let i = 0; i < t.data.length; i++) view.setFloat32(at + 4 * i, t.data[i]!, true);
    at += 4 * t.data.length;
  }
  return out;
}

/** 100 MB: the largest header accepted, as the reference implementation's MAX_HEADER_SIZE (see the header comment). */
export const MAX_HEADER_BYTES = 100_000_000;

/** 1 GiB: the largest edit file read. An SD 1.x edit step is rows × 768 × 4 bytes × 2 (D and G), ~6 KB per row. */
export const MAX_SAFETENSORS_FILE_BYTES = 1024 ** 3;

/**
 * Parses safetensors bytes, enforcing the format's rules (https://github.com/huggingface/safetensors, "Format"):
 * header at most 100 MB and starting with `{`, unique tensor names, `__metadata__` a string → string map, each
 * tensor's data_offsets [begin, end] with begin ≤ end and end − begin = shape product × dtype size, and the
 * tensors' ranges contiguous, non-overlapping and covering the whole data buffer (no holes, no trailing bytes).
 * `what` names the file in messages. Example: `decodeSafetensors(readFileSync('e.safetensors'), 'e.safetensors')`.
 */
export function decodeSafetensors(bytes: Uint8Array, what = 'safetensors file'): SafetensorsContent {
  if (bytes.length < 8) throw new SafetensorsError(`${what} is too short to be a safetensors file`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  // BigInt throughout: a length near 2^64 must be printed exactly, and Number() would round it.
  const big = view.getBigUint64(0, true);
  if (big < 2n || 8n + big > BigInt(bytes.length))
    throw new SafetensorsError(`${what} is not a safetensors file (header length ${big}, file length ${bytes.length})`);
  if (big > BigInt(MAX_HEADER_BYTES))
    throw new SafetensorsError(
      `${what} is not a safetensors file (header length ${big} is over the format's limit of ${MAX_HEADER_BYTES} bytes)`,
    );
  const n = Number(big);
  let text: string;
  let header: Record<string, unknown>;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
    header = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new SafetensorsError(`${what} has a corrupt header: ${(err as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header) || !text.startsWith('{'))
    throw new SafetensorsError(`${what} has a corrupt header: not a JSON object`);
  const seen = new Set<string>();
  for (const key of topLevelKeys(text)) {
    if (seen.has(key)) throw new SafetensorsError(`${what} has a corrupt header: the key '${key}' appears more than once`);
    seen.add(key);
  }
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const ranges: { name: string; begin: number; end: number; shape: number[] }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
        throw new SafetensorsError(`${what}: __metadata__ is ${JSON.stringify(entry)}, not an object of strings`);
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new SafetensorsError(`${what}: metadata '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
      throw new SafetensorsError(`${what}: tensor ${name} is ${JSON.stringify(entry)}, not an object with dtype, shape and data_offsets`);
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e.dtype !== 'F32') throw new SafetensorsError(`${what}: tensor ${name} has dtype ${String(e.dtype)}; only F32 is supported`);
    const shape = e.shape;
    const offs = e.data_offsets;
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0))
      throw new SafetensorsError(`${what}: tensor ${name} has a bad shape`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0))
      throw new SafetensorsError(`${what}: tensor ${name} has bad data_offsets`);
    const [b, end] = offs as [number, number];
    const count = (shape as number[]).reduce((x, y) => x * y, 1);
    if (end < b || end > dataLength || end - b !== 4 * count)
      throw new SafetensorsError(
        `${what}: tensor ${name} data [${b}, ${end}) does not fit the file (${dataLength} data bytes) or its shape [${shape}]`,
      );
    ranges.push({ name, begin: b, end, shape: shape as number[] });
  }
  // The ranges, in file order, must tile the data buffer exactly: no overlap (two names for one set of bytes),
  // no hole and no trailing bytes (room for anything else, e.g. a second file hidden inside).
  const sorted = [...ranges].sort((x, y) => x.begin - y.begin || x.end - y.end);
  let at = 0;
  for (const r of sorted) {
    if (r.begin < at)
      throw new SafetensorsError(`${what}: tensor ${r.name} data [${r.begin}, ${r.end}) overlaps another tensor's (which ends at ${at})`);
    if (r.begin > at) throw new SafetensorsError(`${what}: the data bytes [${at}, ${r.begin}) before tensor ${r.name} belong to no tensor`);
    at = r.end;
  }
  if (at !== dataLength)
    throw new SafetensorsError(`${what}: ${dataLength - at} bytes after the last tensor (data ends at ${at}, the file at ${dataLength})`);
  const tensors = new Map<string, NamedTensor>();
  for (const r of ranges) {
    const count = (r.end - r.begin) / 4;
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getFloat32(dataStart + r.begin + 4 * i, true);
    tensors.set(r.name, { dtype: 'F32', shape: r.shape, data });
  }
  return { tensors, metadata };
}

/**
 * Reads and parses a safetensors file: a regular file (symlinks followed) of at most 1 GiB; a FIFO, device or
 * folder is refused at once. Example: `const { tensors } = await readSafetensors('out/edit.safetensors')`.
 */
export async function readSafetensors(path: string): Promise<SafetensorsContent> {
  let bytes: Uint8Array;
  try {
    bytes = readRegularFileSync(path, MAX_SAFETENSORS_FILE_BYTES);
  } catch (err) {
    throw new SafetensorsError((err as Error).message, { cause: err });
  }
  return decodeSafetensors(bytes, path);
}

/**
 * Writes tensors + metadata to `path` atomically (lib/fs/durable-file.ts), creating the parent folder if missing.
 * Example: `writeSafetensors('out/edit.safetensors', { tensors, metadata: { format: 'time-edit/1' } })`.
 */
export function writeSafetensors(path: string, content: SafetensorsContent): void {
  writeFileAtomicSync(path, encodeSafetensors(content));
}

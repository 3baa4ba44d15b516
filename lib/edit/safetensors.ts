// Safetensors, read and written by hand: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__: {string: string}}, then the tensor bytes
// (offsets relative to the end of the header). Only the dtypes this project writes are supported.
import { closeSync, openSync, renameSync, rmSync, writeSync, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

export class SafetensorsError extends Error {
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
    header['__metadata__'] = content.metadata;
  }
  let offset = 0;
  for (const [name, t] of content.tensors) {
    if (name === '__metadata__') throw new SafetensorsError('a tensor cannot be named __metadata__');
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new SafetensorsError(`tensor ${name}: shape [${t.shape}] needs ${count} values, has ${t.data.length}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + 4 * count] };
    offset += 4 * count;
  }
  let json = JSON.stringify(header);
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

export function decodeSafetensors(bytes: Uint8Array, what = 'safetensors file'): SafetensorsContent {
  if (bytes.length < 8) throw new SafetensorsError(`${what} is too short to be a safetensors file`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const n = Number(view.getBigUint64(0, true));
  if (n < 2 || 8 + n > bytes.length) throw new SafetensorsError(`${what} is not a safetensors file (header length ${n})`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  } catch (err) {
    throw new SafetensorsError(`${what} has a corrupt header: ${(err as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new SafetensorsError(`${what} has a corrupt header`);
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, NamedTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      for (const [k, v] of Object.entries((entry ?? {}) as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new SafetensorsError(`${what}: metadata '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e.dtype !== 'F32') throw new SafetensorsError(`${what}: tensor ${name} has dtype ${String(e.dtype)}; only F32 is supported`);
    const shape = e.shape;
    const offs = e.data_offsets;
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) throw new SafetensorsError(`${what}: tensor ${name} has a bad shape`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0))
      throw new SafetensorsError(`${what}: tensor ${name} has bad data_offsets`);
    const [b, end] = offs as [number, number];
    const count = (shape as number[]).reduce((x, y) => x * y, 1);
    if (end < b || end > dataLength || end - b !== 4 * count)
      throw new SafetensorsError(`${what}: tensor ${name} data [${b}, ${end}) does not fit the file or its shape [${shape}]`);
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getFloat32(dataStart + b + 4 * i, true);
    tensors.set(name, { dtype: 'F32', shape: shape as number[], data });
  }
  return { tensors, metadata };
}

export async function readSafetensors(path: string): Promise<SafetensorsContent> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new SafetensorsError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return decodeSafetensors(bytes, path);
}

/** Writes bytes to `path` atomically: a temp file in the same folder, then rename. */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    if (existsSync(tmp)) rmSync(tmp, { force: true });
    throw err;
  }
}

export function writeSafetensors(path: string, content: SafetensorsContent): void {
  writeFileAtomic(path, encodeSafetensors(content));
}

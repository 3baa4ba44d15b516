// A minimal ONNX model codec: decode/encode ModelProto losslessly, read tensor data (embedded or external)
// lazily, write models with or without external data, and convert float16 <-> float32.
//
// Memory: decoding keeps tensor payloads as subarrays of the file's buffer (no copy), and tensors stored as
// external data are only read when asked for (`tensorBytes`), a slice at a time, so a UNet whose 1.7 GB of
// weights live in weights.pb costs only its graph proto to load.
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { decodeMessage, encodeMessageTo, ModelSchema, TensorSchema, GraphSchema, NodeSchema } from './schema.js';
import { DataType, elementSize, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from './types.js';
import type { Int64 } from './wire.js';

export * from './types.js';
export { ProtobufError, type Int64 } from './wire.js';
export { float16ToFloat32, float32ToFloat16, float16BitsToNumber, numberToFloat16Bits } from './float16.js';
import { float16ToFloat32, float32ToFloat16 } from './float16.js';
import { openAtomicFileSync, type AtomicFile } from '../../fs/durable-file.js';
import { writeAllAt } from '../../fs/write-at.js';
import { TimeEditError } from '../../errors.js';

/** Thrown for models that decode but cannot be used as asked (missing data, unsupported types). */
export class OnnxError extends TimeEditError {
  override readonly name = 'OnnxError';
}

/** Decodes a serialized ModelProto. Tensor payloads stay views into `bytes` (keep it alive, do not mutate it). */
export function decodeModel(bytes: Uint8Array): ModelProto {
  return decodeMessage(ModelSchema, bytes) as unknown as ModelProto;
}

/** Serializes a ModelProto (field-number order; unknown fields and packing preserved). */
export function encodeModel(model: ModelProto): Uint8Array {
  return encodeMessageTo(ModelSchema, model as never).finish();
}

export function decodeTensor(bytes: Uint8Array): TensorProto {
  return decodeMessage(TensorSchema, bytes) as unknown as TensorProto;
}

export function encodeTensor(t: TensorProto): Uint8Array {
  return encodeMessageTo(TensorSchema, t as never).finish();
}

export function encodeGraph(g: GraphProto): Uint8Array {
  return encodeMessageTo(GraphSchema, g as never).finish();
}

export function encodeNode(n: NodeProto): Uint8Array {
  return encodeMessageTo(NodeSchema, n as never).finish();
}

/** A model read from disk: the decoded proto and the folder its external data paths are relative to. */
export interface LoadedModel {
  model: ModelProto;
  /** Directory of the .onnx file (external data `location`s are relative to it). */
  dir: string;
  path: string;
  /** The file's bytes (tensor payloads of `model` are views into it). */
  bytes: Uint8Array;
}

/** Reads and decodes an .onnx file. External data is not read. */
export async function loadModel(path: string): Promise<LoadedModel> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new OnnxError(`cannot read ONNX model ${path}: ${(err as Error).message}`);
  }
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (err) {
    throw new OnnxError(`${path} is not a valid ONNX model: ${(err as Error).message}`);
  }
  if (model.graph === undefined) throw new OnnxError(`${path} is not a valid ONNX model: it has no graph`);
  return { model, dir: dirname(resolve(path)), path: resolve(path), bytes };
}

export function toNumber(v: Int64 | undefined, what = 'value'): number {
  if (v === undefined) return 0;
  if (typeof v === 'number') return v;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new OnnxError(`${what} ${v} does not fit a JS number`);
  return n;
}

export function tensorDims(t: TensorProto): number[] {
  return t.dims.map((d) => toNumber(d, `dimension of ${t.name ?? 'tensor'}`));
}

export function tensorElementCount(t: TensorProto): number {
  return tensorDims(t).reduce((a, b) => a * b, 1);
}

/** Where a tensor's bytes live when stored as external data. */
export interface ExternalDataRef {
  location: string;
  offset: number;
  /** Byte length; undefined means "to the end of the file". */
  length: number | undefined;
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === 1;
}

export function externalDataRef(t: TensorProto): ExternalDataRef | undefined {
  if (!isExternal(t)) return undefined;
  const kv = new Map(t.externalData.map((e) => [e.key ?? '', e.value ?? '']));
  const location = kv.get('location');
  if (!location) throw new OnnxError(`tensor ${t.name ?? '?'} is marked external but has no location`);
  const offset = kv.has('offset') ? Number(kv.get('offset')) : 0;
  const length = kv.has('length') ? Number(kv.get('length')) : undefined;
  if (!Number.isSafeInteger(offset) || offset < 0 || (length !== undefined && (!Number.isSafeInteger(length) || length < 0)))
    throw new OnnxError(`tensor ${t.name ?? '?'} has a bad external data offset/length`);
  return { location, offset, length };
}

function resolveLocation(baseDir: string, location: string): string {
  const norm = normalize(location);
  if (isAbsolute(norm) || norm === '..' || norm.startsWith(`..${sep}`))
    throw new OnnxError(`external data location '${location}' must be a path inside the model's folder`);
  return join(baseDir, norm);
}

/** Reads `length` bytes at `offset` of a file (one positioned read, no full-file load). */
export function readFileSlice(path: string, offset: number, length: number | undefined): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new OnnxError(`cannot open external data file ${path}: ${(err as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const n = length ?? size - offset;
    if (offset + n > size)
      throw new OnnxError(`external data file ${path} is ${size} bytes, a tensor needs bytes ${offset}..${offset + n}`);
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const r = readSync(fd, out, got, n - got, offset + got);
      if (r === 0) throw new OnnxError(`unexpected end of ${path}`);
      got += r;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/**
 * The tensor's data as little-endian bytes in its own data type: its raw_data (a view, not a copy), the
 * external file slice (read now), or the typed repeated field converted (float_data, int32_data, int64_data, ...).
 */
export function tensorBytes(t: TensorProto, baseDir?: string): Uint8Array {
  const ref = externalDataRef(t);
  if (ref !== undefined) {
    if (baseDir === undefined) throw new OnnxError(`tensor ${t.name ?? '?'} uses external data; the model's folder is needed to read it`);
    return readFileSlice(resolveLocation(baseDir, ref.location), ref.offset, ref.length);
  }
  if (t.rawData !== undefined) return t.rawData;
  const dt = t.dataType ?? 0;
  const count = tensorElementCount(t);
  const size = elementSize(dt);
  if (size === undefined) throw new OnnxError(`tensor ${t.name ?? '?'}: data type ${dt} has no fixed-size byte form`);
  const out = new Uint8Array(count * size);
  const view = new DataView(out.buffer);
  if (dt === DataType.FLOAT) t.floatData.forEach((v, i) => view.setFloat32(i * 4, v, true));
  else if (dt === DataType.DOUBLE) t.doubleData.forEach((v, i) => view.setFloat64(i * 8, v, true));
  else if (dt === DataType.INT64) t.int64Data.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  else if (dt === DataType.UINT64 || dt === DataType.UINT32) {
    if (dt === DataType.UINT64) t.uint64Data.forEach((v, i) => view.setBigUint64(i * 8, BigInt(v), true));
    else t.uint64Data.forEach((v, i) => view.setUint32(i * 4, Number(v), true));
  } else {
    // int32_data carries INT32, INT16, INT8, UINT16, UINT8, BOOL, FLOAT16 (bit pattern), BFLOAT16.
    t.int32Data.forEach((v, i) => {
      if (size === 4) view.setInt32(i * 4, v, true);
      else if (size === 2) view.setUint16(i * 2, v & 0xffff, true);
      else view.setUint8(i, v & 0xff);
    });
  }
  return out;
}

/** Float32 values of a FLOAT, FLOAT16 or DOUBLE tensor (always a fresh, aligned array). */
export function tensorToFloat32(t: TensorProto, baseDir?: string): Float32Array {
  const dt = t.dataType ?? 0;
  const bytes = tensorBytes(t, baseDir);
  const count = tensorElementCount(t);
  const size = elementSize(dt);
  if (size !== undefined && bytes.length !== count * size)
    throw new OnnxError(`tensor ${t.name ?? '?'} has ${bytes.length} bytes of data, its shape [${tensorDims(t)}] needs ${count * size}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Float32Array(count);
  if (dt === DataType.FLOAT) for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  else if (dt === DataType.FLOAT16) {
    const bits = new Uint16Array(count);
    for (let i = 0; i < count; i++) bits[i] = view.getUint16(i * 2, true);
    return float16ToFloat32(bits);
  } else if (dt === DataType.DOUBLE) for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
  else throw new OnnxError(`tensor ${t.name ?? '?'} has data type ${dt}; expected float, float16 or double`);
  return out;
}

/** Little-endian bytes of float32 values converted to the given float data type. */
export function float32ToBytes(values: Float32Array, dataType: number): Uint8Array {
  if (dataType === DataType.FLOAT) {
    const out = new Uint8Array(values.length * 4);
    const view = new DataView(out.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
    return out;
  }
  if (dataType === DataType.FLOAT16) {
    const bits = float32ToFloat16(values);
    const out = new Uint8Array(values.length * 2);
    const view = new DataView(out.buffer);
    for (let i = 0; i < bits.length; i++) view.setUint16(i * 2, bits[i]!, true);
    return out;
  }
  if (dataType === DataType.DOUBLE) {
    const out = new Uint8Array(values.length * 8);
    const view = new DataView(out.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat64(i * 8, values[i]!, true);
    return out;
  }
  throw new OnnxError(`cannot store float values as data type ${dataType}`);
}

/**
 * Replaces a float tensor's data in place (same shape, same data type), storing it as embedded raw_data
 * (any external reference and typed field is cleared).
 */
export function setTensorFloat32(t: TensorProto, values: Float32Array): void {
  const count = tensorElementCount(t);
  if (values.length !== count) throw new OnnxError(`tensor ${t.name ?? '?'} holds ${count} values, got ${values.length}`);
  setTensorRawData(t, float32ToBytes(values, t.dataType ?? DataType.FLOAT));
}

/** Replaces a tensor's payload with raw little-endian bytes, embedded in the model. */
export function setTensorRawData(t: TensorProto, raw: Uint8Array): void {
  t.rawData = raw;
  t.floatData = [];
  t.int32Data = [];
  t.int64Data = [];
  t.doubleData = [];
  t.uint64Data = [];
  t.externalData = [];
  delete t.dataLocation;
}

/** Points a tensor at external data (the bytes must be written there by the caller). */
export function setTensorExternal(t: TensorProto, location: string, offset: number, length: number): void {
  delete t.rawData;
  t.floatData = [];
  t.int32Data = [];
  t.int64Data = [];
  t.doubleData = [];
  t.uint64Data = [];
  t.externalData = [
    { key: 'location', value: location },
    { key: 'offset', value: String(offset) },
    { key: 'length', value: String(length) },
  ];
  t.dataLocation = 1;
}

/** Every tensor held by a graph (initializers, Constant node values, nested subgraphs), for external-data moves. */
export function allTensors(g: GraphProto): TensorProto[] {
  const out: TensorProto[] = [...g.initializer];
  for (const n of g.node)
    for (const a of n.attribute) {
      if (a.t) out.push(a.t);
      out.push(...a.tensors);
      if (a.g) out.push(...allTensors(a.g));
      for (const sub of a.graphs) out.push(...allTensors(sub));
    }
  return out;
}

export interface SaveOptions {
  /**
   * Move every tensor with at least `threshold` bytes (default 1024) of data into one external file `location`
   * (relative to the model file), 64-byte aligned. Tensors already external elsewhere are copied in too,
   * one at a time, from `sourceDir`. Without this option, tensors are written where they are.
   */
  externalData?: { location: string; threshold?: number; sourceDir?: string };
}

/**
 * Writes a model to `path` atomically (lib/fs/durable-file.ts: temporary siblings, fsynced, renamed into place,
 * external file first), optionally moving large tensors to an external data file. Missing parent folders (of the
 * model and of the external file) are created. The model object is modified to describe what was written.
 */
export function saveModel(model: ModelProto, path: string, options: SaveOptions = {}): void {
  const dir = dirname(resolve(path));
  const temps: AtomicFile[] = [];
  try {
    const ext = options.externalData;
    let extFile: AtomicFile | undefined;
    if (ext !== undefined) {
      if (model.graph === undefined) throw new OnnxError('model has no graph');
      extFile = openAtomicFileSync(resolveLocation(dir, ext.location));
      temps.push(extFile);
      const threshold = ext.threshold ?? 1024;
      let offset = 0;
      for (const t of allTensors(model.graph)) {
        const ref = externalDataRef(t);
        if (ref !== undefined && ref.location === ext.location && resolve(ext.sourceDir ?? dir) === dir)
          throw new OnnxError(`cannot rewrite external data file ${ext.location} in place; write to a new location`);
        const bytes = ref !== undefined ? tensorBytes(t, ext.sourceDir ?? dir) : t.rawData;
        if (bytes === undefined || bytes.length < threshold) continue;
        offset = Math.ceil(offset / 64) * 64;
        writeAllAt(extFile.fd, bytes, offset);
        setTensorExternal(t, ext.location, offset, bytes.length);
        offset += bytes.length;
      }
    }
    const modelFile = openAtomicFileSync(resolve(path));
    temps.push(modelFile);
    let pos = 0;
    for (const part of encodeMessageTo(ModelSchema, model as never).parts()) {
      writeAllAt(modelFile.fd, part, pos);
      pos += part.length;
    }
    // The external file first: a model file in place always finds the data it points to.
    extFile?.commit();
    modelFile.commit();
  } catch (err) {
    for (const t of temps) t.discard();
    throw err;
  }
}

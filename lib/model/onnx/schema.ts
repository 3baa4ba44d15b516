// Schema-driven decoding/encoding of the ONNX protobuf messages (onnx.proto, IR version ≤ 10).
//
// Lossless round trips: every field is kept, fields this schema does not know are stored verbatim in
// `$unknown` (with their tag) and written back; repeated scalars remember whether they were packed. Fields are
// written in field-number order, which is what protobuf's own serializers do, so a file saved by onnx/torch
// re-encodes to identical bytes.
import { type Int64, ProtobufError, Reader, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, Writer } from './wire.js';

type Kind = 'int64' | 'uint64' | 'int32' | 'float' | 'double' | 'string' | 'bytes' | 'message';

interface FieldSpec {
  no: number;
  name: string;
  kind: Kind;
  repeated?: boolean;
  /** Declared [packed = true] (proto2 default is unpacked). */
  packed?: boolean;
  message?: () => Schema;
}

export interface Schema {
  name: string;
  fields: FieldSpec[];
  byNo: Map<number, FieldSpec>;
}

/** A field the schema does not know, kept as its exact bytes (tag included). */
export interface UnknownField {
  no: number;
  bytes: Uint8Array;
}

/** Bookkeeping present on decoded messages; optional when building messages by hand. */
export interface MessageExtras {
  $unknown?: UnknownField[];
  /** Repeated scalar fields whose packing differs from the declaration, name → packed. */
  $packed?: Record<string, boolean>;
}

function schema(name: string, fields: FieldSpec[]): Schema {
  const sorted = [...fields].sort((a, b) => a.no - b.no);
  return { name, fields: sorted, byNo: new Map(sorted.map((f) => [f.no, f])) };
}

const s = (no: number, name: string): FieldSpec => ({ no, name, kind: 'string' });
const rs = (no: number, name: string): FieldSpec => ({ no, name, kind: 'string', repeated: true });
const i64 = (no: number, name: string): FieldSpec => ({ no, name, kind: 'int64' });
const i32 = (no: number, name: string): FieldSpec => ({ no, name, kind: 'int32' });
const m = (no: number, name: string, message: () => Schema): FieldSpec => ({ no, name, kind: 'message', message });
const rm = (no: number, name: string, message: () => Schema): FieldSpec => ({ no, name, kind: 'message', repeated: true, message });

export const StringStringEntrySchema: Schema = schema('StringStringEntryProto', [s(1, 'key'), s(2, 'value')]);
export const OperatorSetIdSchema: Schema = schema('OperatorSetIdProto', [s(1, 'domain'), i64(2, 'version')]);
export const DimensionSchema: Schema = schema('TensorShapeProto.Dimension', [i64(1, 'dimValue'), s(2, 'dimParam'), s(3, 'denotation')]);
export const TensorShapeSchema: Schema = schema('TensorShapeProto', [rm(1, 'dim', () => DimensionSchema)]);
export const TypeTensorSchema: Schema = schema('TypeProto.Tensor', [i32(1, 'elemType'), m(2, 'shape', () => TensorShapeSchema)]);
export const TypeSequenceSchema: Schema = schema('TypeProto.Sequence', [m(1, 'elemType', () => TypeSchema)]);
export const TypeMapSchema: Schema = schema('TypeProto.Map', [i32(1, 'keyType'), m(2, 'valueType', () => TypeSchema)]);
export const TypeOptionalSchema: Schema = schema('TypeProto.Optional', [m(1, 'elemType', () => TypeSchema)]);
export const TypeSchema: Schema = schema('TypeProto', [
  m(1, 'tensorType', () => TypeTensorSchema),
  m(4, 'sequenceType', () => TypeSequenceSchema),
  m(5, 'mapType', () => TypeMapSchema),
  s(6, 'denotation'),
  m(8, 'sparseTensorType', () => TypeTensorSchema),
  m(9, 'optionalType', () => TypeOptionalSchema),
]);
export const SegmentSchema: Schema = schema('TensorProto.Segment', [i64(1, 'begin'), i64(2, 'end')]);
export const TensorSchema: Schema = schema('TensorProto', [
  { no: 1, name: 'dims', kind: 'int64', repeated: true },
  i32(2, 'dataType'),
  m(3, 'segment', () => SegmentSchema),
  { no: 4, name: 'floatData', kind: 'float', repeated: true, packed: true },
  { no: 5, name: 'int32Data', kind: 'int32', repeated: true, packed: true },
  { no: 6, name: 'stringData', kind: 'bytes', repeated: true },
  { no: 7, name: 'int64Data', kind: 'int64', repeated: true, packed: true },
  s(8, 'name'),
  { no: 9, name: 'rawData', kind: 'bytes' },
  { no: 10, name: 'doubleData', kind: 'double', repeated: true, packed: true },
  { no: 11, name: 'uint64Data', kind: 'uint64', repeated: true, packed: true },
  s(12, 'docString'),
  rm(13, 'externalData', () => StringStringEntrySchema),
  i32(14, 'dataLocation'),
]);
export const SparseTensorSchema: Schema = schema('SparseTensorProto', [
  m(1, 'values', () => TensorSchema),
  m(2, 'indices', () => TensorSchema),
  { no: 3, name: 'dims', kind: 'int64', repeated: true },
]);
export const AttributeSchema: Schema = schema('AttributeProto', [
  s(1, 'name'),
  { no: 2, name: 'f', kind: 'float' },
  i64(3, 'i'),
  { no: 4, name: 's', kind: 'bytes' },
  m(5, 't', () => TensorSchema),
  m(6, 'g', () => GraphSchema),
  { no: 7, name: 'floats', kind: 'float', repeated: true },
  { no: 8, name: 'ints', kind: 'int64', repeated: true },
  { no: 9, name: 'strings', kind: 'bytes', repeated: true },
  rm(10, 'tensors', () => TensorSchema),
  rm(11, 'graphs', () => GraphSchema),
  s(13, 'docString'),
  m(14, 'tp', () => TypeSchema),
  rm(15, 'typeProtos', () => TypeSchema),
  i32(20, 'type'),
  s(21, 'refAttrName'),
  m(22, 'sparseTensor', () => SparseTensorSchema),
  rm(23, 'sparseTensors', () => SparseTensorSchema),
]);
export const ValueInfoSchema: Schema = schema('ValueInfoProto', [s(1, 'name'), m(2, 'type', () => TypeSchema), s(3, 'docString')]);
export const NodeSchema: Schema = schema('NodeProto', [
  rs(1, 'input'),
  rs(2, 'output'),
  s(3, 'name'),
  s(4, 'opType'),
  rm(5, 'attribute', () => AttributeSchema),
  s(6, 'docString'),
  s(7, 'domain'),
]);
export const TensorAnnotationSchema: Schema = schema('TensorAnnotation', [
  s(1, 'tensorName'),
  rm(2, 'quantParameterTensorNames', () => StringStringEntrySchema),
]);
export const GraphSchema: Schema = schema('GraphProto', [
  rm(1, 'node', () => NodeSchema),
  s(2, 'name'),
  rm(5, 'initializer', () => TensorSchema),
  s(10, 'docString'),
  rm(11, 'input', () => ValueInfoSchema),
  rm(12, 'output', () => ValueInfoSchema),
  rm(13, 'valueInfo', () => ValueInfoSchema),
  rm(14, 'quantizationAnnotation', () => TensorAnnotationSchema),
  rm(15, 'sparseInitializer', () => SparseTensorSchema),
]);
export const TrainingInfoSchema: Schema = schema('TrainingInfoProto', [
  m(1, 'initialization', () => GraphSchema),
  m(2, 'algorithm', () => GraphSchema),
  rm(3, 'initializationBinding', () => StringStringEntrySchema),
  rm(4, 'updateBinding', () => StringStringEntrySchema),
]);
export const FunctionSchema: Schema = schema('FunctionProto', [
  s(1, 'name'),
  rs(4, 'input'),
  rs(5, 'output'),
  rs(6, 'attribute'),
  rm(7, 'node', () => NodeSchema),
  s(8, 'docString'),
  rm(9, 'opsetImport', () => OperatorSetIdSchema),
  s(10, 'domain'),
]);
export const ModelSchema: Schema = schema('ModelProto', [
  i64(1, 'irVersion'),
  s(2, 'producerName'),
  s(3, 'producerVersion'),
  s(4, 'domain'),
  i64(5, 'modelVersion'),
  s(6, 'docString'),
  m(7, 'graph', () => GraphSchema),
  rm(8, 'opsetImport', () => OperatorSetIdSchema),
  rm(14, 'metadataProps', () => StringStringEntrySchema),
  rm(20, 'trainingInfo', () => TrainingInfoSchema),
  rm(25, 'functions', () => FunctionSchema),
]);

const utf8 = new TextDecoder('utf-8', { fatal: false });

function wireTypeOf(kind: Kind): number {
  switch (kind) {
    case 'float':
      return WIRE_FIXED32;
    case 'double':
      return WIRE_FIXED64;
    case 'string':
    case 'bytes':
    case 'message':
      return WIRE_LEN;
    default:
      return WIRE_VARINT;
  }
}

function readScalar(r: Reader, kind: Kind): number | Int64 {
  switch (kind) {
    case 'int64':
      return r.int64();
    case 'uint64':
      return r.uint64();
    case 'int32':
      return r.int32();
    case 'float':
      return r.float();
    case 'double':
      return r.double();
    default:
      throw new ProtobufError(`not a scalar kind: ${kind}`);
  }
}

type Decoded = Record<string, unknown> & MessageExtras;

/** Decodes one message of the given schema from buf[start, end). Payload bytes are subarrays of buf. */
export function decodeMessage(s: Schema, buf: Uint8Array, start = 0, end = buf.length): Decoded {
  const out: Decoded = {};
  for (const f of s.fields) if (f.repeated) out[f.name] = [];
  const r = new Reader(buf, start, end);
  while (!r.done) {
    const fieldStart = r.pos;
    const tag = r.uint32();
    const no = Math.floor(tag / 8);
    const wt = tag & 7;
    const f = s.byNo.get(no);
    if (no === 0) throw new ProtobufError(`corrupt ${s.name}: field number 0 at byte ${fieldStart}`);
    const expected = f ? wireTypeOf(f.kind) : -1;
    const packedScalar = f !== undefined && f.repeated === true && wt === WIRE_LEN && expected !== WIRE_LEN;
    if (!f || (wt !== expected && !packedScalar)) {
      r.skip(wt);
      (out.$unknown ??= []).push({ no, bytes: buf.subarray(fieldStart, r.pos) });
      continue;
    }
    if (packedScalar) {
      const payload = r.bytes();
      const sub = new Reader(payload);
      const arr = out[f.name] as unknown[];
      while (!sub.done) arr.push(readScalar(sub, f.kind));
      if (!f.packed) (out.$packed ??= {})[f.name] = true;
      continue;
    }
    let value: unknown;
    if (f.kind === 'message') {
      const payload = r.bytes();
      value = decodeMessage(f.message!(), buf, payload.byteOffset - buf.byteOffset, payload.byteOffset - buf.byteOffset + payload.length);
    } else if (f.kind === 'string') value = utf8.decode(r.bytes());
    else if (f.kind === 'bytes') value = r.bytes();
    else {
      value = readScalar(r, f.kind);
      if (f.repeated && f.packed) (out.$packed ??= {})[f.name] = false;
    }
    if (f.repeated) (out[f.name] as unknown[]).push(value);
    else out[f.name] = value;
  }
  return out;
}

function writeScalar(w: Writer, kind: Kind, v: unknown): void {
  switch (kind) {
    case 'int64':
    case 'uint64':
      w.int64(v as Int64);
      return;
    case 'int32':
      w.int64(v as number);
      return;
    case 'float':
      w.float(v as number);
      return;
    case 'double':
      w.double(v as number);
      return;
    default:
      throw new ProtobufError(`not a scalar kind: ${kind}`);
  }
}

function writeField(w: Writer, f: FieldSpec, v: unknown): void {
  w.tag(f.no, wireTypeOf(f.kind));
  switch (f.kind) {
    case 'string':
      if (typeof v !== 'string') throw new ProtobufError(`field ${f.name} must be a string`);
      w.string(v);
      return;
    case 'bytes':
      if (!(v instanceof Uint8Array)) throw new ProtobufError(`field ${f.name} must be a Uint8Array`);
      w.lenBytes(v);
      return;
    case 'message':
      w.lenWriter(encodeMessageTo(f.message!(), v as Decoded));
      return;
    default:
      writeScalar(w, f.kind, v);
  }
}

/** Encodes a message into a Writer (chunks referenced, not copied). */
export function encodeMessageTo(s: Schema, msg: Decoded): Writer {
  const w = new Writer();
  const unknown = msg.$unknown ?? [];
  let u = 0;
  for (const f of s.fields) {
    while (u < unknown.length && unknown[u]!.no < f.no) w.raw(unknown[u++]!.bytes);
    const v = msg[f.name];
    if (v === undefined || v === null) continue;
    if (!f.repeated) {
      writeField(w, f, v);
      continue;
    }
    if (!Array.isArray(v)) throw new ProtobufError(`field ${s.name}.${f.name} must be an array`);
    if (v.length === 0) continue;
    const packed = msg.$packed?.[f.name] ?? f.packed ?? false;
    const scalar = f.kind !== 'string' && f.kind !== 'bytes' && f.kind !== 'message';
    if (scalar && packed) {
      const inner = new Writer();
      for (const x of v) writeScalar(inner, f.kind, x);
      w.tag(f.no, WIRE_LEN);
      w.lenWriter(inner);
    } else for (const x of v) writeField(w, f, x);
  }
  while (u < unknown.length) w.raw(unknown[u++]!.bytes);
  return w;
}

// Typed views of the ONNX messages as decoded by schema.ts. Repeated fields are always arrays on decoded
// messages; optional fields are undefined when absent from the file (presence is preserved on re-encoding).
import type { MessageExtras } from './schema.js';
import type { Int64 } from './wire.js';

export interface StringStringEntryProto extends MessageExtras {
  key?: string;
  value?: string;
}

export interface OperatorSetIdProto extends MessageExtras {
  domain?: string;
  version?: Int64;
}

export interface DimensionProto extends MessageExtras {
  dimValue?: Int64;
  dimParam?: string;
  denotation?: string;
}

export interface TensorShapeProto extends MessageExtras {
  dim: DimensionProto[];
}

export interface TypeProto extends MessageExtras {
  tensorType?: { elemType?: number; shape?: TensorShapeProto } & MessageExtras;
  sequenceType?: { elemType?: TypeProto } & MessageExtras;
  mapType?: { keyType?: number; valueType?: TypeProto } & MessageExtras;
  optionalType?: { elemType?: TypeProto } & MessageExtras;
  sparseTensorType?: { elemType?: number; shape?: TensorShapeProto } & MessageExtras;
  denotation?: string;
}

export interface TensorProto extends MessageExtras {
  dims: Int64[];
  dataType?: number;
  segment?: { begin?: Int64; end?: Int64 } & MessageExtras;
  floatData: number[];
  int32Data: number[];
  stringData: Uint8Array[];
  int64Data: Int64[];
  name?: string;
  rawData?: Uint8Array;
  doubleData: number[];
  uint64Data: Int64[];
  docString?: string;
  externalData: StringStringEntryProto[];
  /** 0 = DEFAULT, 1 = EXTERNAL. */
  dataLocation?: number;
}

export interface SparseTensorProto extends MessageExtras {
  values?: TensorProto;
  indices?: TensorProto;
  dims: Int64[];
}

export interface AttributeProto extends MessageExtras {
  name?: string;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  floats: number[];
  ints: Int64[];
  strings: Uint8Array[];
  tensors: TensorProto[];
  graphs: GraphProto[];
  docString?: string;
  tp?: TypeProto;
  typeProtos: TypeProto[];
  /** AttributeType enum: 1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 5 GRAPH, 6 FLOATS, 7 INTS, 8 STRINGS, ... */
  type?: number;
  refAttrName?: string;
  sparseTensor?: SparseTensorProto;
  sparseTensors: SparseTensorProto[];
}

export interface ValueInfoProto extends MessageExtras {
  name?: string;
  type?: TypeProto;
  docString?: string;
}

export interface NodeProto extends MessageExtras {
  input: string[];
  output: string[];
  name?: string;
  opType?: string;
  attribute: AttributeProto[];
  docString?: string;
  domain?: string;
}

export interface GraphProto extends MessageExtras {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  docString?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  quantizationAnnotation: ({ tensorName?: string; quantParameterTensorNames: StringStringEntryProto[] } & MessageExtras)[];
  sparseInitializer: SparseTensorProto[];
}

export interface FunctionProto extends MessageExtras {
  name?: string;
  input: string[];
  output: string[];
  attribute: string[];
  node: NodeProto[];
  docString?: string;
  opsetImport: OperatorSetIdProto[];
  domain?: string;
}

export interface ModelProto extends MessageExtras {
  irVersion?: Int64;
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: Int64;
  docString?: string;
  graph?: GraphProto;
  opsetImport: OperatorSetIdProto[];
  metadataProps: StringStringEntryProto[];
  trainingInfo: unknown[];
  functions: FunctionProto[];
}

/** TensorProto.DataType values used here. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

/** Bytes per element of fixed-size data types (undefined for strings and unknown types). */
export function elementSize(dataType: number): number | undefined {
  switch (dataType) {
    case DataType.FLOAT:
    case DataType.INT32:
    case DataType.UINT32:
      return 4;
    case DataType.UINT8:
    case DataType.INT8:
    case DataType.BOOL:
      return 1;
    case DataType.UINT16:
    case DataType.INT16:
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      return 2;
    case DataType.INT64:
    case DataType.DOUBLE:
    case DataType.UINT64:
      return 8;
    default:
      return undefined;
  }
}

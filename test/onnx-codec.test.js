// ONNX codec: byte-identical round trips of a torch export, hand-built graphs that onnxruntime runs,
// external data written and read back, float16 conversion against hand-computed bit patterns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import {
  decodeModel,
  encodeModel,
  loadModel,
  saveModel,
  tensorToFloat32,
  tensorBytes,
  setTensorFloat32,
  externalDataRef,
  float32ToFloat16,
  float16ToFloat32,
  numberToFloat16Bits,
  DataType,
  decodeTensor,
  encodeTensor,
} from '../lib/model/onnx/index.js';

const fixture = new URL('./fixtures/tiny-unet.onnx', import.meta.url).pathname;

test('a torch.onnx.export file re-encodes to identical bytes', () => {
  const bytes = readFileSync(fixture);
  const model = decodeModel(bytes);
  assert.ok(model.graph.node.length > 100);
  assert.equal(model.graph.input.map((i) => i.name).join(','), 'sample,timestep,encoder_hidden_states');
  const again = encodeModel(model);
  assert.equal(again.length, bytes.length);
  assert.ok(Buffer.from(again).equals(bytes));
});

test('unknown fields and non-default packing survive a round trip', () => {
  // TensorProto: dims=[2] (field 1, varint), data_type=1, float_data unpacked (two fixed32 fields with tag 4<<3|5),
  // then an unknown field 99 (varint 7) and an unknown length-delimited field 100.
  const f = new Uint8Array(new Float32Array([1.5, -2]).buffer);
  const bytes = Uint8Array.from([
    0x08,
    0x02,
    0x10,
    0x01,
    0x25,
    ...f.subarray(0, 4),
    0x25,
    ...f.subarray(4, 8),
    0x98,
    0x06,
    0x07,
    0xa2,
    0x06,
    0x02,
    0xaa,
    0xbb,
  ]);
  const t = decodeTensor(bytes);
  assert.deepEqual(t.floatData, [1.5, -2]);
  assert.deepEqual(t.dims, [2]);
  assert.equal(t.$unknown.length, 2);
  assert.deepEqual([...encodeTensor(t)], [...bytes]);
  assert.deepEqual([...tensorToFloat32(t)], [1.5, -2]);
});

test('int64 values beyond 2^53 and negative ints round-trip exactly', () => {
  const t = {
    dims: [3],
    dataType: DataType.INT64,
    floatData: [],
    int32Data: [],
    stringData: [],
    int64Data: [9223372036854775807n, -1, -9223372036854775808n],
    doubleData: [],
    uint64Data: [],
    externalData: [],
  };
  const back = decodeTensor(encodeTensor(t));
  assert.deepEqual(back.int64Data, [9223372036854775807n, -1, -9223372036854775808n]);
  const raw = tensorBytes(back);
  const view = new DataView(raw.buffer, raw.byteOffset);
  assert.equal(view.getBigInt64(0, true), 9223372036854775807n);
  assert.equal(view.getBigInt64(8, true), -1n);
});

function tensor(name, dims, values) {
  return {
    name,
    dims,
    dataType: DataType.FLOAT,
    rawData: new Uint8Array(new Float32Array(values).buffer),
    floatData: [],
    int32Data: [],
    stringData: [],
    int64Data: [],
    doubleData: [],
    uint64Data: [],
    externalData: [],
  };
}
function valueInfo(name, dims) {
  return {
    name,
    type: {
      tensorType: {
        elemType: DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}
function node(opType, input, output, name = output[0]) {
  return { opType, input, output, name, attribute: [] };
}
export function tinyMatMulModel(w) {
  return {
    irVersion: 8,
    producerName: 'test',
    opsetImport: [{ domain: '', version: 14 }],
    metadataProps: [],
    trainingInfo: [],
    functions: [],
    graph: {
      name: 'g',
      node: [node('MatMul', ['x', 'W'], ['y'])],
      initializer: [tensor('W', [2, 3], w)],
      input: [valueInfo('x', ['b', 2])],
      output: [valueInfo('y', ['b', 3])],
      valueInfo: [],
      quantizationAnnotation: [],
      sparseInitializer: [],
    },
  };
}

test('a hand-built graph runs in onnxruntime and gives x·W', async () => {
  const w = [1, 2, 3, 4, 5, 6];
  const bytes = encodeModel(tinyMatMulModel(w));
  const session = await ort.InferenceSession.create(bytes);
  const out = await session.run({ x: new ort.Tensor('float32', new Float32Array([1, 10]), [1, 2]) });
  assert.deepEqual([...out.y.data], [1 + 40, 2 + 50, 3 + 60]);
});

test('external data: saved, read back lazily, and run by onnxruntime from the path', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onnx-ext-'));
  try {
    const w = Array.from({ length: 6 }, (_, i) => i * 0.5 - 1);
    const model = tinyMatMulModel(w);
    saveModel(model, join(dir, 'model.onnx'), { externalData: { location: 'weights.pb', threshold: 0 } });
    assert.deepEqual(readdirSync(dir).sort(), ['model.onnx', 'weights.pb']);
    assert.equal(statSync(join(dir, 'weights.pb')).size, 24);
    const loaded = await loadModel(join(dir, 'model.onnx'));
    const init = loaded.model.graph.initializer[0];
    assert.deepEqual(externalDataRef(init), { location: 'weights.pb', offset: 0, length: 24 });
    assert.equal(init.rawData, undefined);
    assert.deepEqual([...tensorToFloat32(init, loaded.dir)], w);
    assert.throws(() => tensorToFloat32(init), /external data/);
    const session = await ort.InferenceSession.create(join(dir, 'model.onnx'));
    const out = await session.run({ x: new ort.Tensor('float32', new Float32Array([1, 0]), [1, 2]) });
    assert.deepEqual([...out.y.data], w.slice(0, 3));
    // Embedding it again: the weights move back inline and the model runs from a buffer.
    setTensorFloat32(
      init,
      Float32Array.from(w, (v) => 2 * v),
    );
    const s2 = await ort.InferenceSession.create(encodeModel(loaded.model));
    const out2 = await s2.run({ x: new ort.Tensor('float32', new Float32Array([0, 1]), [1, 2]) });
    assert.deepEqual(
      [...out2.y.data],
      w.slice(3).map((v) => 2 * v),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('float16 conversion matches hand-computed bit patterns', () => {
  const cases = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00],
    [1e6, 0x7c00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000],
    [3 * 2 ** -26, 0x0001],
    [2 ** -14, 0x0400],
    [0.1, 0x2e66],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
  ];
  for (const [v, bits] of cases) assert.equal(numberToFloat16Bits(v), bits, `f16(${v})`);
  assert.ok(Number.isNaN(float16ToFloat32([numberToFloat16Bits(NaN)])[0]));
  const xs = Float32Array.from([0.333, -7.25, 1024.5, 6e-5]);
  const back = float16ToFloat32(float32ToFloat16(xs));
  for (let i = 0; i < xs.length; i++) assert.ok(Math.abs(back[i] - xs[i]) <= Math.abs(xs[i]) * 2 ** -11 + 2 ** -25);
});

test('loading a model never touches its external data; a missing or short weights file is a clear error when read', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onnx-lazy-'));
  try {
    const model = tinyMatMulModel([1, 2, 3, 4, 5, 6]);
    saveModel(model, join(dir, 'model.onnx'), { externalData: { location: 'weights.pb', threshold: 0 } });
    rmSync(join(dir, 'weights.pb'));
    const loaded = await loadModel(join(dir, 'model.onnx')); // fine: only the graph is read
    const init = loaded.model.graph.initializer[0];
    assert.throws(() => tensorToFloat32(init, loaded.dir), /cannot open external data file .*weights\.pb/);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'weights.pb'), new Uint8Array(10));
    assert.throws(() => tensorToFloat32(init, loaded.dir), /is 10 bytes, a tensor needs bytes 0\.\.24/);
    init.externalData[0].value = '../outside.bin';
    assert.throws(() => tensorBytes(init, loaded.dir), /must be a path inside the model's folder/);
    await assert.rejects(loadModel(join(dir, 'weights.pb')), /not a valid ONNX model/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

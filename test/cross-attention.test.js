// Cross-attention discovery on a torch export of a diffusers-style attention UNet and on hand-built graphs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { loadModel, DataType } from '../lib/model/onnx/index.js';
import { findCrossAttention, CrossAttentionError } from '../lib/model/cross-attention.js';

const fixture = new URL('./fixtures/tiny-unet.onnx', import.meta.url).pathname;

test('finds the three K/V pairs of the tiny UNet export, in graph order, ignoring self-attention', async () => {
  const { model } = await loadModel(fixture);
  const map = findCrossAttention(model.graph);
  assert.equal(map.d, 12);
  assert.equal(map.conditioningInput, 'encoder_hidden_states');
  assert.deepEqual(
    map.layers.map((l) => [l.name, l.width]),
    [
      ['/down.0/attn2', 8],
      ['/mid.0/attn2', 16],
      ['/up.0/attn2', 8],
    ],
  );
  for (const l of map.layers) {
    assert.match(l.k.nodeName, /attn2\/to_k\/MatMul$/);
    assert.match(l.v.nodeName, /attn2\/to_v\/MatMul$/);
    assert.equal(l.k.inputWidth, 12);
    assert.notEqual(l.k.initializer, l.v.initializer);
  }
  assert.equal(map.totalRows, 2 * (8 + 16 + 8));
});

const f = (name, dims) => ({
  name,
  dims,
  dataType: DataType.FLOAT,
  rawData: new Uint8Array(4 * dims.reduce((a, b) => a * b, 1)),
  floatData: [],
  int32Data: [],
  stringData: [],
  int64Data: [],
  doubleData: [],
  uint64Data: [],
  externalData: [],
});
const n = (opType, input, output, name = '', domain) => ({ opType, input, output, name, attribute: [], ...(domain ? { domain } : {}) });
const graph = (nodes, inits, inputs = ['x', 'encoder_hidden_states']) => ({
  node: nodes,
  initializer: inits,
  input: inputs.map((name) => ({ name })),
  output: [{ name: 'y' }],
  valueInfo: [],
  quantizationAnnotation: [],
  sparseInitializer: [],
});

// A minimal attention without names: K is swapped to input 0 of nothing special, V's MatMul has the Softmax second.
function attention(prefix, ctx, width) {
  const p = (s) => `${prefix}${s}`;
  return {
    nodes: [
      n('MatMul', ['x', p('Wq')], [p('q')]),
      n('MatMul', [ctx, p('Wv')], [p('v')]), // V listed before K on purpose
      n('MatMul', [ctx, p('Wk')], [p('k')]),
      n('Transpose', [p('k')], [p('kt')]),
      n('MatMul', [p('q'), p('kt')], [p('s')]),
      n('Div', [p('s'), p('scale')], [p('s2')]),
      n('Softmax', [p('s2')], [p('a')]),
      n('Cast', [p('a')], [p('a2')]),
      n('MatMul', [p('a2'), p('v')], [p('o')]),
    ],
    inits: [f(p('Wq'), [4, width]), f(p('Wk'), [6, width]), f(p('Wv'), [6, width]), f(p('scale'), [])],
  };
}

test('unnamed graph, K/V classified by structure, conditioning through a Cast', () => {
  const a = attention('a_', 'ctx16', 5);
  const b = attention('b_', 'encoder_hidden_states', 7);
  const g = graph([n('Cast', ['encoder_hidden_states'], ['ctx16']), ...a.nodes, ...b.nodes], [...a.inits, ...b.inits]);
  const map = findCrossAttention(g);
  assert.equal(map.d, 6);
  assert.deepEqual(
    map.layers.map((l) => [l.width, l.k.initializer, l.v.initializer]),
    [
      [5, 'a_Wk', 'a_Wv'],
      [7, 'b_Wk', 'b_Wv'],
    ],
  );
});

test('packed K/V and fused attention ops are refused with a clear message', () => {
  const packed = graph(
    [n('MatMul', ['encoder_hidden_states', 'Wkv'], ['kv'], 'kv_proj'), n('Split', ['kv'], ['k', 'v'])],
    [f('Wkv', [6, 10])],
  );
  assert.throws(
    () => findCrossAttention(packed),
    (e) => e instanceof CrossAttentionError && /packed into one weight/.test(e.message),
  );
  const fused = graph(
    [n('MultiHeadAttention', ['x', 'encoder_hidden_states', 'encoder_hidden_states'], ['y'], 'mha', 'com.microsoft')],
    [],
  );
  assert.throws(() => findCrossAttention(fused), /fused com\.microsoft\.MultiHeadAttention node \(mha\).*packed/);
});

test('nothing to edit is an error, never a silent no-op', () => {
  assert.throws(() => findCrossAttention(graph([n('Relu', ['x'], ['y'])], [])), /found no cross-attention K\/V projections/);
  assert.throws(() => findCrossAttention(graph([], [], ['x'])), /has no input 'encoder_hidden_states' \(its inputs: x\)/);
  const onlyK = attention('a_', 'encoder_hidden_states', 5);
  onlyK.nodes[1] = n('MatMul', ['x', 'a_Wv'], ['a_v']); // V no longer reads the conditioning
  onlyK.inits[2] = f('a_Wv', [4, 5]);
  assert.throws(() => findCrossAttention(graph(onlyK.nodes, onlyK.inits)), /cross-attention K without a matching V/);
});

const toyUnet = new URL('../models/toy-shapes/unet/model.onnx', import.meta.url).pathname;
test('the embedded SD-shaped UNet: 16 layers in down/mid/up order with the widths its config implies', {
  skip: existsSync(toyUnet) ? false : 'no embedded model yet',
}, async () => {
  const config = JSON.parse(readFileSync(new URL('../models/toy-shapes/unet/config.json', import.meta.url), 'utf8'));
  const ch = config.block_out_channels;
  const rev = [...ch].reverse();
  const expected = [];
  config.down_block_types.forEach((t, i) => {
    if (t.startsWith('CrossAttn')) for (let k = 0; k < config.layers_per_block; k++) expected.push(ch[i]);
  });
  expected.push(ch[ch.length - 1]);
  config.up_block_types.forEach((t, i) => {
    if (t.startsWith('CrossAttn')) for (let k = 0; k <= config.layers_per_block; k++) expected.push(rev[i]);
  });
  const { model } = await loadModel(toyUnet);
  const map = findCrossAttention(model.graph);
  assert.equal(map.layers.length, 16);
  assert.deepEqual(
    map.layers.map((l) => l.width),
    expected,
  );
  assert.equal(map.d, config.cross_attention_dim);
  assert.match(map.layers[6].name, /mid_block/);
});

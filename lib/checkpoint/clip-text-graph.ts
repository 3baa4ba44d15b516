// The CLIP text encoder (the text tower of openai/clip-vit-large-patch14, as SD 1.x uses it) as an ONNX graph
// built from a configuration and weight references, with the project's ONNX codec: fp32 throughout, weights
// given as external data (lib/checkpoint/text-encoder.ts writes them), so the graph itself is a few KB.
// The computation is transformers' CLIPTextModel (modeling_clip.py; the facts and sources are in docs/checkpoints.md):
//   h = token_embedding[ids] + position_embedding[0..L-1]       (positions are 0…L−1, never a stored position_ids)
//   per layer (pre-LayerNorm, eps from the config, 1e-5 for CLIP):
//     h = h + out_proj(attention(q_proj(ln1 h)·head_dim^−½, k_proj(ln1 h), v_proj(ln1 h)), causal mask)
//     h = h + fc2(quick_gelu(fc1(ln2 h)))                       quick_gelu(x) = x·σ(1.702·x)
//   last_hidden_state = final_layer_norm(h)                     (what SD 1.x conditions on)
// Linear weights are stored [out, in] by PyTorch; the graph's MatMul takes them transposed, [in, out].
import { DataType, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../model/onnx/index.js';
import type { TextEncoderConfig } from './open-checkpoint.js';

/** A weight the graph reads: its name (text_model-relative, e.g. 'encoder.layers.0.mlp.fc1.weight'), shape as stored in the graph. */
export interface GraphWeight {
  name: string;
  /** the graph's shape: [in, out] for linear weights (transposed), as stored otherwise */
  dims: number[];
  /** whether the stored [out, in] tensor must be transposed into the graph's [in, out] */
  transpose: boolean;
}

/** Input and output names of the graph. */
export const CLIP_TEXT_INPUT = 'input_ids';
export const CLIP_TEXT_OUTPUT = 'last_hidden_state';

/**
 * The weights the graph of `config` reads, in the order they are laid out in its external data file.
 * Example: `clipTextWeights(config)[0]` → { name: 'embeddings.token_embedding.weight', dims: [49408, 768], transpose: false }.
 */
export function clipTextWeights(config: TextEncoderConfig): GraphWeight[] {
  const { vocabSize, width: w, positions, mlpWidth: m } = config;
  const out: GraphWeight[] = [
    { name: 'embeddings.token_embedding.weight', dims: [vocabSize, w], transpose: false },
    { name: 'embeddings.position_embedding.weight', dims: [positions, w], transpose: false },
  ];
  for (let i = 0; i < config.layers; i++) {
    const p = `encoder.layers.${i}.`;
    out.push(
      { name: `${p}layer_norm1.weight`, dims: [w], transpose: false },
      { name: `${p}layer_norm1.bias`, dims: [w], transpose: false },
    );
    for (const x of ['q', 'k', 'v', 'out'])
      out.push(
        { name: `${p}self_attn.${x}_proj.weight`, dims: [w, w], transpose: true },
        { name: `${p}self_attn.${x}_proj.bias`, dims: [w], transpose: false },
      );
    out.push(
      { name: `${p}layer_norm2.weight`, dims: [w], transpose: false },
      { name: `${p}layer_norm2.bias`, dims: [w], transpose: false },
      { name: `${p}mlp.fc1.weight`, dims: [w, m], transpose: true },
      { name: `${p}mlp.fc1.bias`, dims: [m], transpose: false },
      { name: `${p}mlp.fc2.weight`, dims: [m, w], transpose: true },
      { name: `${p}mlp.fc2.bias`, dims: [w], transpose: false },
    );
  }
  out.push(
    { name: 'final_layer_norm.weight', dims: [w], transpose: false },
    { name: 'final_layer_norm.bias', dims: [w], transpose: false },
  );
  return out;
}

function tensor(name: string, dataType: number, dims: number[], raw: Uint8Array): TensorProto {
  return {
    name,
    dims,
    dataType,
    rawData: raw,
    floatData: [],
    int32Data: [],
    stringData: [],
    int64Data: [],
    doubleData: [],
    uint64Data: [],
    externalData: [],
  };
}

function f32(name: string, dims: number[], values: Float32Array): TensorProto {
  return tensor(name, DataType.FLOAT, dims, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}

function i64(name: string, values: number[]): TensorProto {
  return tensor(name, DataType.INT64, [values.length], new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer));
}

function valueInfo(name: string, elemType: number, dims: (number | string)[]): ValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

/**
 * The ONNX model of the CLIP text encoder of `config` (opset 17): input `input_ids` int32 [batch, positions],
 * output `last_hidden_state` float32 [batch, positions, width]. `weight(w)` returns the initializer of each
 * clipTextWeights entry (typically external data in a file beside the model).
 * Example: `buildClipTextModel(config, (w) => externalTensor(w))` → a ModelProto to save and load in onnxruntime.
 */
export function buildClipTextModel(config: TextEncoderConfig, weight: (w: GraphWeight) => TensorProto): ModelProto {
  const { width: w, heads, positions: L, layerNormEps: eps } = config;
  const hd = w / heads;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = clipTextWeights(config).map(weight);
  let counter = 0;
  const node = (opType: string, input: string[], attribute: NodeProto['attribute'] = [], scope = ''): string => {
    const out = `${scope}${opType}_${counter++}`;
    nodes.push({ opType, input, output: [out], attribute, name: out });
    return out;
  };
  const attrInt = (name: string, i: number) => ({
    name,
    type: 2,
    i,
    floats: [],
    ints: [],
    strings: [],
    tensors: [],
    graphs: [],
    typeProtos: [],
    sparseTensors: [],
  });
  const attrFloat = (name: string, f: number) => ({
    name,
    type: 1,
    f,
    floats: [],
    ints: [],
    strings: [],
    tensors: [],
    graphs: [],
    typeProtos: [],
    sparseTensors: [],
  });
  const attrInts = (name: string, ints: number[]) => ({
    name,
    type: 7,
    ints,
    floats: [],
    strings: [],
    tensors: [],
    graphs: [],
    typeProtos: [],
    sparseTensors: [],
  });

  // Constants: the head split/merge shapes, the attention scale, the causal mask, quick_gelu's 1.702.
  inits.push(i64('shape_heads', [0, 0, heads, hd]), i64('shape_merge', [0, 0, w]));
  inits.push(f32('attn_scale', [], Float32Array.of(hd ** -0.5)), f32('gelu_alpha', [], Float32Array.of(1.702)));
  // −3.4e38 (float32's lowest, as transformers' finfo.min) above the diagonal: those scores vanish in the softmax.
  const mask = new Float32Array(L * L);
  for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) mask[i * L + j] = -3.4028234663852886e38;
  inits.push(f32('causal_mask', [L, L], mask));

  const layerNorm = (x: string, prefix: string, scope: string): string =>
    node('LayerNormalization', [x, `${prefix}.weight`, `${prefix}.bias`], [attrInt('axis', -1), attrFloat('epsilon', eps)], scope);
  const linear = (x: string, prefix: string, scope: string): string =>
    node('Add', [node('MatMul', [x, `${prefix}.weight`], [], scope), `${prefix}.bias`], [], scope);

  const tok = node('Gather', ['embeddings.token_embedding.weight', CLIP_TEXT_INPUT], [attrInt('axis', 0)], '/embeddings/');
  let h = node('Add', [tok, 'embeddings.position_embedding.weight'], [], '/embeddings/');
  for (let i = 0; i < config.layers; i++) {
    const p = `encoder.layers.${i}`;
    const s = `/${p}/`;
    const x = layerNorm(h, `${p}.layer_norm1`, s);
    const heads4 = (t: string): string =>
      node('Transpose', [node('Reshape', [t, 'shape_heads'], [], s)], [attrInts('perm', [0, 2, 1, 3])], s);
    const q = heads4(node('Mul', [linear(x, `${p}.self_attn.q_proj`, s), 'attn_scale'], [], s));
    const k = node(
      'Transpose',
      [node('Reshape', [linear(x, `${p}.self_attn.k_proj`, s), 'shape_heads'], [], s)],
      [attrInts('perm', [0, 2, 3, 1])],
      s,
    );
    const v = heads4(linear(x, `${p}.self_attn.v_proj`, s));
    const scores = node('Add', [node('MatMul', [q, k], [], s), 'causal_mask'], [], s);
    const probs = node('Softmax', [scores], [attrInt('axis', -1)], s);
    const ctx = node(
      'Reshape',
      [node('Transpose', [node('MatMul', [probs, v], [], s)], [attrInts('perm', [0, 2, 1, 3])], s), 'shape_merge'],
      [],
      s,
    );
    h = node('Add', [h, linear(ctx, `${p}.self_attn.out_proj`, s)], [], s);
    const y = layerNorm(h, `${p}.layer_norm2`, s);
    const f = linear(y, `${p}.mlp.fc1`, s);
    const g = node('Mul', [f, node('Sigmoid', [node('Mul', [f, 'gelu_alpha'], [], s)], [], s)], [], s);
    h = node('Add', [h, linear(g, `${p}.mlp.fc2`, s)], [], s);
  }
  const last = layerNorm(h, 'final_layer_norm', '/final_layer_norm/');
  nodes.push({ opType: 'Identity', input: [last], output: [CLIP_TEXT_OUTPUT], attribute: [], name: 'output' });

  const graph: GraphProto = {
    name: 'clip_text_model',
    node: nodes,
    initializer: inits,
    input: [valueInfo(CLIP_TEXT_INPUT, DataType.INT32, ['batch', L])],
    output: [valueInfo(CLIP_TEXT_OUTPUT, DataType.FLOAT, ['batch', L, w])],
    valueInfo: [],
    quantizationAnnotation: [],
    sparseInitializer: [],
  };
  return {
    irVersion: 8,
    producerName: 'time-edit',
    opsetImport: [{ domain: '', version: 17 }],
    metadataProps: [],
    trainingInfo: [],
    functions: [],
    graph,
  };
}

// Query-sliced attention as an ONNX graph rewrite, so that a UNet never holds a whole [batch, heads, N, M]
// attention-probability tensor: each attention's softmax(Q·Kᵀ·s)·V is computed over S slices of the query rows
// and the slices are concatenated (what diffusers' attention slicing does in PyTorch,
// https://huggingface.co/docs/diffusers/optimization/memory#sliced-attention-for-additional-memory-savings).
// Every op between the two MatMuls works row by row along the query axis (a MatMul's rows, a scalar scale, a
// Cast, a Softmax over the last axis), so the result is the same up to float rounding. Attentions are found
// by structure, never by names: MatMul(A, B) → [Mul|Div by a scalar | Cast]* → Softmax(last axis) → [Cast]* →
// MatMul(P, V), each intermediate used only there. That covers torch's exports of diffusers' attention (the
// scale after Q·Kᵀ, or folded into Q and K before it, as in scaled_dot_product_attention's decomposition;
// [batch·heads, N, d] or [batch, heads, N, d] layouts; fp16 graphs with an upcast softmax).
// The slice bounds are computed in the graph from Shape(A), so one rewritten model runs at every image size.
import { OnnxError } from './onnx/index.js';
import { DataType, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from './onnx/types.js';
import { toNumber } from './onnx/index.js';

/** Which attentions a rewrite slices. */
export type SlicedAttention = 'self' | 'all';

/** One attention found in a graph: the nodes from Q·Kᵀ to ·V. */
export interface AttentionSite {
  /** index in graph.node of the Q·Kᵀ MatMul */
  scoresNode: number;
  /** index of the Softmax */
  softmaxNode: number;
  /** index of the MatMul that multiplies the probabilities by V */
  valuesNode: number;
  /** whether the keys come from a graph input (the text conditioning): cross-attention; else self-attention */
  cross: boolean;
}

/** What sliceAttention did. */
export interface SlicingReport {
  /** attentions found (self and cross) */
  found: number;
  /** of those, how many are self-attention */
  selfAttention: number;
  /** attentions rewritten */
  sliced: number;
  slices: number;
}

/** The most slices one attention may be cut into (far above any useful count: each slice is a few ops). */
export const MAX_ATTENTION_SLICES = 256;

const SCALE_OPS = new Set(['Mul', 'Div']);
const SHAPE_SCALAR_OPS = new Set([
  'Cast',
  'Pow',
  'Sqrt',
  'Div',
  'Mul',
  'Reciprocal',
  'Gather',
  'Shape',
  'Slice',
  'Squeeze',
  'Unsqueeze',
  'Identity',
  'Constant',
]);
const KEY_PATH_OPS = new Set(['Transpose', 'Reshape', 'Cast', 'Identity', 'Mul', 'Div', 'Squeeze', 'Unsqueeze']);
const PREFIX = 'time_edit_attention_slicing';

interface GraphIndex {
  producer: Map<string, number>;
  consumers: Map<string, number[]>;
  initializers: Map<string, TensorProto>;
  inputs: Set<string>;
  outputs: Set<string>;
}

function indexGraph(g: GraphProto): GraphIndex {
  const producer = new Map<string, number>();
  const consumers = new Map<string, number[]>();
  g.node.forEach((n, i) => {
    for (const o of n.output) producer.set(o, i);
    for (const x of n.input) {
      if (x === '') continue;
      const list = consumers.get(x);
      if (list === undefined) consumers.set(x, [i]);
      else if (!list.includes(i)) list.push(i);
    }
  });
  return {
    producer,
    consumers,
    initializers: new Map(g.initializer.map((t) => [t.name ?? '', t])),
    inputs: new Set(g.input.map((v) => v.name ?? '')),
    outputs: new Set(g.output.map((v) => v.name ?? '')),
  };
}

function attr(n: NodeProto, name: string): number | undefined {
  const a = n.attribute.find((x) => x.name === name);
  return a?.i === undefined ? undefined : toNumber(a.i, `attribute ${name}`);
}

function tensorCount(t: TensorProto): number {
  return t.dims.reduce<number>((p, d) => p * toNumber(d), 1);
}

/**
 * Whether `name` is a scalar-like value (one element, or computed only from shapes and constants), so that
 * multiplying the scores by it commutes with slicing the query rows.
 */
function isScalarLike(ix: GraphIndex, g: GraphProto, name: string, depth = 0): boolean {
  const init = ix.initializers.get(name);
  if (init !== undefined) return tensorCount(init) <= 1;
  const p = ix.producer.get(name);
  if (p === undefined || depth > 16) return false;
  const n = g.node[p]!;
  if (n.opType === 'Constant') {
    const t = n.attribute.find((a) => a.name === 'value')?.t;
    return n.attribute.some((a) => a.name === 'value_float' || a.name === 'value_int') || (t !== undefined && tensorCount(t) <= 1);
  }
  if (n.opType === 'Shape') return true;
  if (!SHAPE_SCALAR_OPS.has(n.opType ?? '')) return false;
  return n.input.every((x) => x === '' || isScalarLike(ix, g, x, depth + 1));
}

function onlyConsumer(ix: GraphIndex, name: string): number | undefined {
  if (ix.outputs.has(name)) return undefined;
  const c = ix.consumers.get(name);
  return c !== undefined && c.length === 1 ? c[0] : undefined;
}

/** Whether the keys operand `b` of Q·Kᵀ is computed from a graph input (through its projection): cross-attention. */
function keysFromGraphInput(ix: GraphIndex, g: GraphProto, b: string): boolean {
  let x = b;
  for (let hop = 0; hop < 16; hop++) {
    if (ix.inputs.has(x)) return true;
    const p = ix.producer.get(x);
    if (p === undefined) return false;
    const n = g.node[p]!;
    if (n.opType === 'MatMul' || n.opType === 'Gemm') {
      // The projection: its data input, through Cast/Identity only, is the conditioning input or not.
      let y = n.input[0] ?? '';
      for (let k = 0; k < 8; k++) {
        if (ix.inputs.has(y)) return true;
        const q = ix.producer.get(y);
        if (q === undefined || !['Cast', 'Identity'].includes(g.node[q]!.opType ?? '')) return false;
        y = g.node[q]!.input[0] ?? '';
      }
      return false;
    }
    if (!KEY_PATH_OPS.has(n.opType ?? '')) return false;
    x = n.input[0] ?? '';
  }
  return false;
}

/**
 * The attentions of a graph's top level, found by structure (see the file header). Subgraphs (If/Loop bodies)
 * are not searched. Example: `findAttentionSites(model.graph)` on an SD 1.x UNet → 32 sites, 16 of them self-attention.
 */
export function findAttentionSites(g: GraphProto): AttentionSite[] {
  const ix = indexGraph(g);
  const sites: AttentionSite[] = [];
  g.node.forEach((sm, si) => {
    if (sm.opType !== 'Softmax') return;
    const axis = attr(sm, 'axis');
    if (axis !== -1) return; // opset ≥ 13's default is -1 but exporters write it; any other axis is not row-wise
    // Upward: scale and cast ops, each a single-use link, to the Q·Kᵀ MatMul.
    let x = sm.input[0] ?? '';
    let scores: number | undefined;
    for (let hop = 0; hop < 8; hop++) {
      const p = ix.producer.get(x);
      if (p === undefined) return;
      const n = g.node[p]!;
      if (n.output.some((o) => o === x) && onlyConsumer(ix, x) === undefined) return;
      if (n.opType === 'MatMul') {
        scores = p;
        break;
      }
      if (n.opType === 'Cast') {
        x = n.input[0] ?? '';
        continue;
      }
      if (SCALE_OPS.has(n.opType ?? '')) {
        const [a, b] = n.input as [string, string];
        // Div: only the dividend may be the scores. Mul: either side.
        if (isScalarLike(ix, g, b)) x = a;
        else if (n.opType === 'Mul' && isScalarLike(ix, g, a)) x = b;
        else return;
        continue;
      }
      return;
    }
    if (scores === undefined) return;
    // Downward: casts to the MatMul that takes the probabilities as its first operand.
    let y = sm.output[0] ?? '';
    let values: number | undefined;
    for (let hop = 0; hop < 4; hop++) {
      const c = onlyConsumer(ix, y);
      if (c === undefined) return;
      const n = g.node[c]!;
      if (n.opType === 'MatMul') {
        if (n.input[0] !== y) return;
        values = c;
        break;
      }
      if (n.opType !== 'Cast') return;
      y = n.output[0] ?? '';
    }
    if (values === undefined) return;
    sites.push({
      scoresNode: scores,
      softmaxNode: si,
      valuesNode: values,
      cross: keysFromGraphInput(ix, g, g.node[scores]!.input[1] ?? ''),
    });
  });
  return sites;
}

/** The chain of node indices from the scores MatMul to the values MatMul, in data-flow order. */
function chainOf(g: GraphProto, ix: GraphIndex, site: AttentionSite): number[] {
  const chain = [site.scoresNode];
  let cur = site.scoresNode;
  while (cur !== site.valuesNode) {
    const next = onlyConsumer(ix, g.node[cur]!.output[0] ?? '');
    if (next === undefined) throw new OnnxError('attention slicing: the attention chain changed while it was rewritten');
    chain.push(next);
    cur = next;
  }
  return chain;
}

function int64Tensor(name: string, values: bigint[]): TensorProto {
  const data = new BigInt64Array(values);
  return {
    name,
    dims: [values.length],
    dataType: DataType.INT64,
    rawData: new Uint8Array(data.buffer),
    floatData: [],
    int32Data: [],
    stringData: [],
    int64Data: [],
    doubleData: [],
    uint64Data: [],
    externalData: [],
  };
}

function node(opType: string, name: string, input: string[], output: string[]): NodeProto {
  return { opType, name, input, output, attribute: [] };
}

/**
 * Rewrites `model` in place so that each attention (self-attention only, unless `which` is 'all') computes
 * softmax(Q·Kᵀ)·V over `slices` slices of its query rows (axis −2), ceil(N / slices) rows each; the peak
 * attention buffer becomes [batch, heads, ceil(N / slices), M]. slices = 1 leaves the model unchanged.
 * A model whose opset is below 10 (Slice without inputs) is left unchanged (sliced: 0).
 * Example: `sliceAttention(decodeModel(bytes), 4)` → `{ found: 32, selfAttention: 16, sliced: 16, slices: 4 }` on an SD 1.x UNet.
 */
export function sliceAttention(model: ModelProto, slices: number, which: SlicedAttention = 'self'): SlicingReport {
  if (!Number.isInteger(slices) || slices < 1 || slices > MAX_ATTENTION_SLICES)
    throw new OnnxError(`attention slices must be an integer in 1…${MAX_ATTENTION_SLICES}, got ${slices}`);
  const g = model.graph;
  if (g === undefined) throw new OnnxError('attention slicing: the model has no graph');
  const sites = findAttentionSites(g);
  const selfAttention = sites.filter((s) => !s.cross).length;
  const chosen = sites.filter((s) => which === 'all' || !s.cross);
  const opset = model.opsetImport.find((o) => (o.domain ?? '') === '');
  const version = opset === undefined ? 0 : toNumber(opset.version);
  if (g.initializer.some((t) => (t.name ?? '').startsWith(PREFIX)))
    throw new OnnxError('attention slicing: the model is already sliced (it has time_edit_attention_slicing tensors)');
  if (slices === 1 || chosen.length === 0 || version < 10) return { found: sites.length, selfAttention, sliced: 0, slices: 1 };
  const ix = indexGraph(g);
  // Shared constants: the axis, S, S − 1 (for a ceiling division) and the slice numbers 1…S−1.
  const c = (s: string): string => `${PREFIX}/${s}`;
  g.initializer.push(
    int64Tensor(c('axis'), [-2n]),
    int64Tensor(c('count'), [BigInt(slices)]),
    int64Tensor(c('count_minus_one'), [BigInt(slices - 1)]),
    int64Tensor(c('zero'), [0n]),
    int64Tensor(c('end'), [9223372036854775807n]),
  );
  for (let i = 1; i < slices; i++) g.initializer.push(int64Tensor(c(`k${i}`), [BigInt(i)]));
  // New nodes replace each chain where its last node stood, so the graph stays topologically sorted.
  const replaced = new Map<number, NodeProto[]>();
  const removed = new Set<number>();
  chosen.forEach((site, a) => {
    const chain = chainOf(g, ix, site);
    const first = g.node[site.scoresNode]!;
    const queries = first.input[0] ?? '';
    const p = (s: string): string => `${PREFIX}/a${a}/${s}`;
    const out: NodeProto[] = [
      node('Shape', p('shape'), [queries], [p('shape')]),
      node('Gather', p('rows'), [p('shape'), c('axis')], [p('rows')]),
      node('Add', p('rows_up'), [p('rows'), c('count_minus_one')], [p('rows_up')]),
      node('Div', p('chunk'), [p('rows_up'), c('count')], [p('chunk')]),
    ];
    const bounds = [c('zero')];
    for (let i = 1; i < slices; i++) {
      out.push(node('Mul', p(`start${i}`), [p('chunk'), c(`k${i}`)], [p(`start${i}`)]));
      bounds.push(p(`start${i}`));
    }
    bounds.push(c('end'));
    const results: string[] = [];
    for (let i = 0; i < slices; i++) {
      const q = p(`s${i}/queries`);
      out.push(node('Slice', p(`s${i}/slice`), [queries, bounds[i]!, bounds[i + 1]!, c('axis')], [q]));
      let prev = q;
      for (const ci of chain) {
        const n = g.node[ci]!;
        const o = p(`s${i}/${n.opType}${ci}`);
        // The chain's data input is replaced by the previous slice value; its other inputs (K, V, the scale) stay.
        const data = ci === site.scoresNode ? queries : g.node[chain[chain.indexOf(ci) - 1]!]!.output[0]!;
        out.push({ ...n, name: `${n.name ?? ''}/slice${i}`, input: n.input.map((x) => (x === data ? prev : x)), output: [o] });
        prev = o;
      }
      results.push(prev);
    }
    const last = g.node[site.valuesNode]!;
    out.push({
      opType: 'Concat',
      name: p('concat'),
      input: results,
      output: [last.output[0]!],
      attribute: [
        { name: 'axis', i: -2, type: 2, floats: [], ints: [], strings: [], tensors: [], graphs: [], typeProtos: [], sparseTensors: [] },
      ],
    });
    for (const ci of chain) removed.add(ci);
    replaced.set(site.valuesNode, out);
  });
  const nodes: NodeProto[] = [];
  g.node.forEach((n, i) => {
    const r = replaced.get(i);
    if (r !== undefined) nodes.push(...r);
    else if (!removed.has(i)) nodes.push(n);
  });
  g.node = nodes;
  return { found: sites.length, selfAttention, sliced: chosen.length, slices };
}

// Finds the UNet's cross-attention K and V projections from the ONNX graph's structure, never from names:
// a MatMul whose first input is the text conditioning (possibly through Cast/Identity) and whose second input
// is a 2-D initializer [d, out] (PyTorch's Linear weight stored transposed). K and V are told apart by where
// their output goes: K's reaches the Q·Kᵀ MatMul whose result feeds a Softmax; V's reaches the MatMul that
// takes the Softmax output. A layer is one (K, V) pair sharing a Softmax.
import { type OnnxError, tensorDims, type GraphProto, type TensorProto } from './onnx/index.js';
import { TimeEditError } from '../errors.js';

export class CrossAttentionError extends TimeEditError {
  override readonly name = 'CrossAttentionError';
}

export interface Projection {
  kind: 'k' | 'v';
  /** The MatMul node's name (may be empty in hand-made graphs) and its index in graph.node. */
  nodeName: string;
  nodeIndex: number;
  /** Name of the weight initializer, shape [inputWidth, width]. */
  initializer: string;
  inputWidth: number;
  width: number;
  /** TensorProto data type of the weight (1 float32, 10 float16). */
  dataType: number;
}

export interface CrossAttentionLayer {
  /** 0-based, in graph order (down, mid, up blocks for an SD UNet). */
  index: number;
  /** A readable name: the common scope of the K and V MatMul names, e.g. /down_blocks.0/attentions.0/transformer_blocks.0/attn2. */
  name: string;
  width: number;
  k: Projection;
  v: Projection;
}

export interface CrossAttentionMap {
  /** The graph input carrying the text conditioning. */
  conditioningInput: string;
  /** Text embedding width d. */
  d: number;
  layers: CrossAttentionLayer[];
  /** Σ width over all K and V projections (rows of the stacked weight matrix). */
  totalRows: number;
}

const PASS_FORWARD = new Set(['Reshape', 'Transpose', 'Cast', 'Identity', 'Squeeze', 'Unsqueeze', 'Flatten', 'Mul', 'Div', 'Add']);
const TO_SOFTMAX = new Set(['Mul', 'Div', 'Add', 'Sub', 'Cast', 'Where', 'Reshape', 'Transpose', 'Identity']);
const FROM_SOFTMAX = new Set(['Cast', 'Reshape', 'Transpose', 'Dropout', 'Identity']);
const MAX_HOPS = 16;

interface Index {
  producer: Map<string, number>;
  consumers: Map<string, number[]>;
  initializers: Map<string, TensorProto>;
}

function indexGraph(g: GraphProto): Index {
  const producer = new Map<string, number>();
  const consumers = new Map<string, number[]>();
  g.node.forEach((n, i) => {
    for (const o of n.output) producer.set(o, i);
    for (const inp of n.input) {
      if (!inp) continue;
      const list = consumers.get(inp);
      if (list) list.push(i);
      else consumers.set(inp, [i]);
    }
  });
  return { producer, consumers, initializers: new Map(g.initializer.map((t) => [t.name ?? '', t])) };
}

/** Walks forward from `start` along data-carrying ops; returns the indices of nodes of type `target` reached. */
function reachForward(g: GraphProto, ix: Index, start: string, pass: Set<string>, target: string): { node: number; via: string }[] {
  const found: { node: number; via: string }[] = [];
  const seen = new Set<string>();
  let frontier = [start];
  for (let hop = 0; hop < MAX_HOPS && frontier.length > 0; hop++) {
    const next: string[] = [];
    for (const value of frontier) {
      if (seen.has(value)) continue;
      seen.add(value);
      for (const ni of ix.consumers.get(value) ?? []) {
        const n = g.node[ni]!;
        if (n.opType === target) found.push({ node: ni, via: value });
        else if (
          pass.has(n.opType ?? '') &&
          (n.opType === 'Mul' ||
            n.opType === 'Div' ||
            n.opType === 'Add' ||
            n.opType === 'Sub' ||
            n.opType === 'Where' ||
            n.input[0] === value)
        )
          next.push(...n.output);
      }
    }
    frontier = next;
  }
  return found;
}

/** True when `value` comes from a Softmax through at most MAX_HOPS pass-through ops. */
function fromSoftmax(g: GraphProto, ix: Index, value: string): number | undefined {
  let v = value;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    const pi = ix.producer.get(v);
    if (pi === undefined) return undefined;
    const n = g.node[pi]!;
    if (n.opType === 'Softmax') return pi;
    if (!FROM_SOFTMAX.has(n.opType ?? '')) return undefined;
    v = n.input[0] ?? '';
  }
  return undefined;
}

function commonScope(a: string, b: string): string {
  const pa = a.split('/');
  const pb = b.split('/');
  let i = 0;
  while (i < pa.length && i < pb.length && pa[i] === pb[i]) i++;
  return pa.slice(0, i).join('/');
}

/**
 * Discovers every cross-attention layer. Throws CrossAttentionError when the conditioning input is missing,
 * when K/V are packed into one weight or fused into an attention op, when a projection cannot be classified,
 * or when nothing is found.
 */
export function findCrossAttention(g: GraphProto, options: { conditioningInput?: string } = {}): CrossAttentionMap {
  const inputName = options.conditioningInput ?? 'encoder_hidden_states';
  const inputs = g.input.map((i) => i.name ?? '');
  if (!inputs.includes(inputName))
    throw new CrossAttentionError(`the UNet graph has no input '${inputName}' (its inputs: ${inputs.join(', ') || 'none'})`);
  const ix = indexGraph(g);

  // The conditioning and its Cast/Identity aliases (fp16 models cast it once and share the cast).
  const aliases = new Set([inputName]);
  let grow = [inputName];
  while (grow.length > 0) {
    const next: string[] = [];
    for (const a of grow)
      for (const ni of ix.consumers.get(a) ?? []) {
        const n = g.node[ni]!;
        if ((n.opType === 'Cast' || n.opType === 'Identity') && n.input[0] === a)
          for (const o of n.output) {
            if (aliases.has(o)) continue;
            aliases.add(o);
            next.push(o);
          }
      }
    grow = next;
  }

  const projections: (Projection & { softmax: number })[] = [];
  let d: number | undefined;
  for (const a of aliases)
    for (const ni of ix.consumers.get(a) ?? []) {
      const n = g.node[ni]!;
      const op = n.opType ?? '';
      if (op === 'Cast' || op === 'Identity' || op === 'Shape') continue;
      if (op !== 'MatMul') {
        const what = `${n.domain ? `${n.domain}.` : ''}${op} node (${n.name || 'unnamed'})`;
        if (/attention/i.test(op) || n.domain === 'com.microsoft')
          throw new CrossAttentionError(
            `the text conditioning is read by a fused ${what}: K and V are packed (e.g. by onnxruntime's transformer optimizer); ` +
              'TIME needs a UNet exported with separate to_k/to_v MatMuls',
          );
        throw new CrossAttentionError(
          `the text conditioning also feeds a ${what}; TIME edits only K/V projections, so this UNet is unsupported`,
        );
      }
      if (n.input[0] !== a) continue;
      const weight = ix.initializers.get(n.input[1] ?? '');
      const label = n.name || `MatMul #${ni}`;
      if (weight === undefined)
        throw new CrossAttentionError(
          `${label} reads the text conditioning but its weight '${n.input[1]}' is not an initializer; cannot edit it`,
        );
      let dims: number[];
      try {
        dims = tensorDims(weight);
      } catch (err) {
        throw new CrossAttentionError(`${label}: ${(err as OnnxError).message}`);
      }
      if (dims.length !== 2) throw new CrossAttentionError(`${label}: weight '${weight.name}' has shape [${dims}], expected [d, out]`);
      if (d === undefined) d = dims[0];
      else if (d !== dims[0])
        throw new CrossAttentionError(`${label}: weight input width ${dims[0]} differs from the other projections' ${d}`);
      for (const ci of ix.consumers.get(n.output[0] ?? '') ?? [])
        if (g.node[ci]!.opType === 'Split' || g.node[ci]!.opType === 'Slice')
          throw new CrossAttentionError(
            `${label} feeds a ${g.node[ci]!.opType}: K and V are packed into one weight [${dims}]; TIME needs separate to_k/to_v weights`,
          );

      const attentionMatMuls = reachForward(g, ix, n.output[0] ?? '', PASS_FORWARD, 'MatMul');
      let kind: 'k' | 'v' | undefined;
      let softmax: number | undefined;
      for (const { node: ai, via } of attentionMatMuls) {
        const am = g.node[ai]!;
        const other = am.input[0] === via ? am.input[1] : am.input[0];
        const sIn = fromSoftmax(g, ix, other ?? '');
        if (sIn !== undefined) {
          if (kind === 'k')
            throw new CrossAttentionError(`${label}: output reaches both a Q·Kᵀ product and an attention-weighted sum; cannot classify it`);
          kind = 'v';
          softmax = sIn;
          continue;
        }
        const sOut = reachForward(g, ix, am.output[0] ?? '', TO_SOFTMAX, 'Softmax');
        if (sOut.length > 0) {
          if (kind === 'v')
            throw new CrossAttentionError(`${label}: output reaches both a Q·Kᵀ product and an attention-weighted sum; cannot classify it`);
          kind = 'k';
          softmax = sOut[0]!.node;
        }
      }
      if (kind === undefined || softmax === undefined)
        throw new CrossAttentionError(
          `${label} reads the text conditioning but feeds neither a Q·Kᵀ→Softmax product nor a Softmax-weighted sum; unsupported attention structure`,
        );
      projections.push({
        kind,
        softmax,
        nodeName: n.name ?? '',
        nodeIndex: ni,
        initializer: weight.name ?? '',
        inputWidth: dims[0]!,
        width: dims[1]!,
        dataType: weight.dataType ?? 1,
      });
    }

  if (projections.length === 0 || d === undefined)
    throw new CrossAttentionError(`found no cross-attention K/V projections reading '${inputName}': is this a text-conditioned UNet?`);

  const bySoftmax = new Map<number, { k?: Projection; v?: Projection }>();
  for (const { softmax, ...p } of projections) {
    const slot = bySoftmax.get(softmax) ?? {};
    if (slot[p.kind] !== undefined)
      throw new CrossAttentionError(
        `two ${p.kind.toUpperCase()} projections (${slot[p.kind]!.nodeName}, ${p.nodeName}) feed the same attention`,
      );
    slot[p.kind] = p;
    bySoftmax.set(softmax, slot);
  }
  const layers: CrossAttentionLayer[] = [];
  for (const { k, v } of bySoftmax.values()) {
    if (k === undefined || v === undefined) {
      const only = (k ?? v)!;
      throw new CrossAttentionError(
        `${only.nodeName || 'a projection'} is a cross-attention ${only.kind.toUpperCase()} without a matching ${only.kind === 'k' ? 'V' : 'K'}`,
      );
    }
    if (k.width !== v.width) throw new CrossAttentionError(`${k.nodeName}: K width ${k.width} differs from V width ${v.width}`);
    let name = commonScope(k.nodeName, v.nodeName);
    if (name === '') name = `layer ${layers.length}`;
    layers.push({ index: 0, name, width: k.width, k, v });
  }
  layers.sort((a, b) => Math.min(a.k.nodeIndex, a.v.nodeIndex) - Math.min(b.k.nodeIndex, b.v.nodeIndex));
  layers.forEach((l, i) => (l.index = i));
  return { conditioningInput: inputName, d, layers, totalRows: layers.reduce((s, l) => s + 2 * l.width, 0) };
}

/** One line per layer, for reports: "0 /down_blocks.0/.../attn2 width 320 K onnx::MatMul_1 V onnx::MatMul_2". */
export function describeCrossAttention(map: CrossAttentionMap): string[] {
  return map.layers.map((l) => `${String(l.index).padStart(2)} ${l.name} width ${l.width} K ${l.k.initializer} V ${l.v.initializer}`);
}

/** The three parts of an SD UNet that hold cross-attention layers. */
export type UnetBlock = 'down' | 'mid' | 'up';

/**
 * The UNet part a layer belongs to, from its name (diffusers exports name their nodes /down_blocks.N/…,
 * /mid_block/…, /up_blocks.N/…); undefined when the name does not say (a hand-made graph with unnamed nodes).
 *
 * @example
 *   layerBlock({ ...layer, name: '/mid_block/attentions.0/transformer_blocks.0/attn2' });   // 'mid'
 */
export function layerBlock(layer: CrossAttentionLayer): UnetBlock | undefined {
  const m = /(?:^|\/)(down_blocks|mid_block|up_blocks)(?:[./]|$)/.exec(layer.name);
  if (m === null) return undefined;
  return m[1] === 'down_blocks' ? 'down' : m[1] === 'mid_block' ? 'mid' : 'up';
}

/**
 * The layer indices a list names: comma-separated indices ("0,6"), ranges ("0-5") and block names
 * ("down", "mid", "up"), in any mix ("mid,up"). Ascending, no repeats. Throws CrossAttentionError naming the bad
 * item: an index the UNet does not have, a block no layer belongs to, a block name on a UNet whose layer names do not
 * say their block.
 *
 * @example
 *   selectLayers(map, 'down');    // [0, 1, 2, 3, 4, 5] on an SD 1.x UNet (and the embedded model)
 *   selectLayers(map, '6,13-15'); // [6, 13, 14, 15]
 */
export function selectLayers(map: CrossAttentionMap, list: string): number[] {
  const count = map.layers.length;
  const items = list.split(',').map((s) => s.trim());
  if (items.length === 0 || items.some((s) => s === ''))
    throw new CrossAttentionError(`the layer list '${list}' has an empty item (expected e.g. "0,6", "0-5", "down" or "mid,up")`);
  const chosen = new Set<number>();
  const index = (text: string): number => {
    const i = Number(text);
    if (!(Number.isSafeInteger(i) && i >= 0 && i < count))
      throw new CrossAttentionError(`cross-attention layer ${text} does not exist: this UNet has layers 0-${count - 1}`);
    return i;
  };
  for (const item of items) {
    if (item === 'down' || item === 'mid' || item === 'up') {
      const blocks = map.layers.map(layerBlock);
      if (blocks.some((b) => b === undefined))
        throw new CrossAttentionError(
          `the layer names of this UNet do not say their block: give indices 0-${count - 1} instead of '${item}'`,
        );
      const inBlock = map.layers.filter((_, i) => blocks[i] === item).map((l) => l.index);
      if (inBlock.length === 0) throw new CrossAttentionError(`this UNet has no cross-attention layer in its ${item} block`);
      for (const i of inBlock) chosen.add(i);
    } else if (/^\d+-\d+$/.test(item)) {
      const [a, b] = item.split('-').map(index) as [number, number];
      if (b < a) throw new CrossAttentionError(`the layer range '${item}' is empty (write it low-high)`);
      for (let i = a; i <= b; i++) chosen.add(i);
    } else if (/^\d+$/.test(item)) chosen.add(index(item));
    else throw new CrossAttentionError(`'${item}' in the layer list is not an index, a range or down/mid/up`);
  }
  return [...chosen].sort((x, y) => x - y);
}

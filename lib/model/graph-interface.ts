// A model.onnx's inputs and outputs read from its graph, in the form onnxruntime's session metadata gives them
// (lib/model/worker-protocol.ts SessionInfo), so that a pipeline can check its graphs without creating the
// sessions it may never run. Where the graph cannot answer exactly as onnxruntime would (a file too big to read
// whole, a graph the codec cannot decode, a dim with neither value nor name, a non-tensor value), the answer is
// null and the caller creates the session to ask onnxruntime itself. Inputs are exactly onnxruntime's; an
// output's dims may be less specific (a name where onnxruntime's shape inference found a number), so a caller that
// needs an output dim must create the session when the graph gives a name.
import { stat } from 'node:fs/promises';
import { loadModel, toNumber, type ValueInfoProto } from './onnx/index.js';
import type { SessionInfo, ValueInfo } from './worker-protocol.js';

/**
 * The largest model.onnx read whole to learn its interface (256 MiB: SD's VAE decoder and the toy model fit; a
 * single-file fp32 text encoder or UNet does not, and gets its session at once instead).
 */
export const GRAPH_READ_LIMIT = 256 * 1024 * 1024;

/** ONNX TensorProto.DataType → onnxruntime-node's type name (onnx.proto3 `DataType`). */
const ORT_TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
};

function describe(v: ValueInfoProto): ValueInfo | null {
  const t = v.type?.tensorType;
  const type = t?.elemType === undefined ? undefined : ORT_TYPE_NAMES[t.elemType];
  if (v.name === undefined || t === undefined || type === undefined || t.shape === undefined) return null;
  const shape: (number | string)[] = [];
  for (const d of t.shape.dim) {
    if (d.dimValue !== undefined) shape.push(toNumber(d.dimValue, 'dim'));
    else if (d.dimParam !== undefined && d.dimParam !== '') shape.push(d.dimParam);
    else return null;
  }
  return { name: v.name, type, shape };
}

/**
 * The inputs (initializers excluded, as onnxruntime lists them) and outputs of the model at `path`, or null when
 * only a session can tell. Never throws: any problem is left for the session to report in its own words.
 * Example: `const info = await graphInterface('models/toy-shapes/vae_decoder/model.onnx')` → `{ inputs: [{ name:
 * 'latent_sample', type: 'float32', shape: [...] }], outputs: [...] }`.
 */
export async function graphInterface(path: string, limit = GRAPH_READ_LIMIT): Promise<SessionInfo | null> {
  try {
    if ((await stat(path)).size > limit) return null;
    const graph = (await loadModel(path)).model.graph!;
    if (graph.sparseInitializer.length > 0) return null;
    const initializers = new Set(graph.initializer.map((t) => t.name));
    const inputs = graph.input.filter((v) => !initializers.has(v.name)).map(describe);
    const outputs = graph.output.map(describe);
    if (inputs.some((v) => v === null) || outputs.some((v) => v === null)) return null;
    return { inputs: inputs as ValueInfo[], outputs: outputs as ValueInfo[] };
  } catch {
    return null;
  }
}

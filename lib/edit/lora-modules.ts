// The K/V weights a LoRA is computed from, with the module names kohya-format LoRAs use, from either kind of model:
//   - an ONNX UNet: the diffusers module of each cross-attention layer comes from the K and V MatMul nodes' scopes
//     (`/down_blocks.0/attentions.0/transformer_blocks.0/attn2/to_k/MatMul`, what torch.onnx.export writes for the
//     diffusers UNet); a graph whose node names do not carry those scopes cannot be named, and says so;
//   - a safetensors checkpoint (lib/checkpoint/): the names are the SD 1.x key map's.
// Weights are in PyTorch layout [out, d] as stored: the embedded model's to_k/to_v carry its text-state scale
// (models/README.md, "Text state scale"), and a LoRA of it describes those stored weights.
import { type Checkpoint, readKvWeight } from '../checkpoint/open-checkpoint.js';
import { kohyaModuleName, SD_ATTENTION_LAYERS, type SdAttentionLayer } from '../checkpoint/sd-keys.js';
import type { CrossAttentionMap } from '../model/cross-attention.js';
import { type LoadedModel, tensorToFloat32 } from '../model/onnx/index.js';
import { EditError } from './edit.js';
import type { KvWeights } from './lora-factor.js';

/** The attention's diffusers module path for an SD 1.x layer, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2`. */
export function attentionModule(layer: SdAttentionLayer): string {
  return `${layer.diffusers}.transformer_blocks.0.attn2`;
}

const BY_MODULE = new Map(SD_ATTENTION_LAYERS.map((l) => [attentionModule(l), l]));

/** The SD 1.x layer of a diffusers attention module path; undefined for any other path. */
export function sdLayerOfModule(module: string): SdAttentionLayer | undefined {
  return BY_MODULE.get(module);
}

/**
 * The kohya module name (`lora_unet_…_attn2_to_k`) of a projection of an attention module path.
 *
 * @example
 *   kohyaName('mid_block.attentions.0.transformer_blocks.0.attn2', 'v');   // 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v'
 */
export function kohyaName(module: string, path: 'k' | 'v'): string {
  const layer = sdLayerOfModule(module);
  if (layer === undefined) throw new EditError(`${module} is not one of SD 1.x's 16 cross-attention modules`);
  return kohyaModuleName(layer, path);
}

/** The diffusers attention module of a K/V MatMul node name, or undefined when the name does not carry one. */
function moduleOfNode(nodeName: string, path: 'k' | 'v'): string | undefined {
  const m = new RegExp(`^/(.+)/to_${path}/MatMul$`).exec(nodeName);
  return m === null ? undefined : m[1]!.replaceAll('/', '.');
}

/** ONNX [d, out] → PyTorch [out, d]. */
function transposed(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}

/**
 * The K/V weights of an ONNX UNet with their diffusers module names, from the MatMul node scopes. Throws EditError
 * naming the layer when a node's name does not give one of SD 1.x's 16 attention modules (a graph exported without
 * module scopes, or renamed), since a LoRA must name its modules.
 *
 * @example
 *   const ctx = await openEditContext(pipeline);
 *   kvWeightsOfOnnx(ctx.unet, ctx.map).layers[0].module;   // 'down_blocks.0.attentions.0.transformer_blocks.0.attn2'
 */
export function kvWeightsOfOnnx(unet: LoadedModel, map: CrossAttentionMap): KvWeights {
  const inits = new Map(unet.model.graph!.initializer.map((t) => [t.name ?? '', t]));
  const seen = new Set<string>();
  const layers = map.layers.map((layer) => {
    const k = moduleOfNode(layer.k.nodeName, 'k');
    const v = moduleOfNode(layer.v.nodeName, 'v');
    if (k === undefined || v === undefined || k !== v || sdLayerOfModule(k) === undefined)
      throw new EditError(
        `cannot name cross-attention layer ${layer.index} for a LoRA: its K/V MatMul nodes are named '${layer.k.nodeName || '(unnamed)'}' and ` +
          `'${layer.v.nodeName || '(unnamed)'}', not /<diffusers module>/to_k/MatMul and /<diffusers module>/to_v/MatMul of one of SD 1.x's ` +
          '16 attention modules (export the UNet with its module scopes, as the diffusers ONNX converter does)',
      );
    if (seen.has(k)) throw new EditError(`two cross-attention layers of the UNet are named ${k}: cannot name them apart for a LoRA`);
    seen.add(k);
    const read = (initializer: string): Float32Array => {
      const t = inits.get(initializer);
      if (t === undefined) throw new EditError(`initializer ${initializer} is missing from the UNet`);
      return transposed(tensorToFloat32(t, unet.dir), map.d, layer.width);
    };
    return { index: layer.index, module: k, width: layer.width, k: read(layer.k.initializer), v: read(layer.v.initializer) };
  });
  return { d: map.d, layers };
}

/**
 * The 32 K/V weights of an opened checkpoint (read by offset, as float32), in graph order.
 *
 * @example
 *   kvWeightsOfCheckpoint(openCheckpoint('v1-5-pruned-emaonly.safetensors')).layers.length;   // 16
 */
export function kvWeightsOfCheckpoint(checkpoint: Checkpoint): KvWeights {
  return {
    d: checkpoint.d,
    layers: SD_ATTENTION_LAYERS.map((layer) => {
      const find = (kind: 'k' | 'v') => {
        const t = checkpoint.kv.find((x) => x.layerIndex === layer.index && x.kind === kind);
        if (t === undefined) throw new EditError(`${checkpoint.path} has no ${kind.toUpperCase()} weight for ${layer.diffusers}`);
        return t;
      };
      const k = find('k');
      return { index: layer.index, module: attentionModule(layer), width: k.shape[0], k: readKvWeight(k), v: readKvWeight(find('v')) };
    }),
  };
}

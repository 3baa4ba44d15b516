// A checkpoint's 16 cross-attention layers described the way the ONNX path describes a UNet's
// (lib/model/cross-attention.ts CrossAttentionMap), so that everything downstream of "which layers, which widths"
// (the edit's checks, reports, the LoRA and merged-checkpoint writers) treats both model kinds alike; and the
// checkpoint's fingerprint, the sha256 an edit file records to say which model it was made for.
import { createHash } from 'node:crypto';
import type { CrossAttentionLayer, CrossAttentionMap, Projection } from '../model/cross-attention.js';
import { DataType } from '../model/onnx/index.js';
import { type Checkpoint, type KvTensor, readKvWeight } from './open-checkpoint.js';

/** The ONNX-style scope of an SD layer: 'down_blocks.0.attentions.0' → '/down_blocks.0/attentions.0/transformer_blocks.0/attn2'. */
export function attentionScope(diffusersBlock: string): string {
  const parts = diffusersBlock.split('.');
  const segments: string[] = [];
  for (let i = 0; i < parts.length; i++)
    if (i + 1 < parts.length && /^\d+$/.test(parts[i + 1]!)) {
      segments.push(`${parts[i]}.${parts[i + 1]}`);
      i++;
    } else segments.push(parts[i]!);
  return `/${segments.join('/')}/transformer_blocks.0/attn2`;
}

const DATA_TYPES = { F32: DataType.FLOAT, F16: DataType.FLOAT16, BF16: DataType.BFLOAT16 } as const;

function projection(t: KvTensor): Projection {
  return {
    kind: t.kind,
    nodeName: `${attentionScope(t.names.layer.diffusers)}/to_${t.kind}`,
    nodeIndex: t.names.position,
    initializer: t.key,
    inputWidth: t.shape[1],
    width: t.shape[0],
    dataType: DATA_TYPES[t.dtype],
  };
}

/**
 * The checkpoint's layers as a CrossAttentionMap: layer names are the ONNX export's scopes
 * ('/mid_block/attentions.0/transformer_blocks.0/attn2'), `initializer` is the tensor's key in its file, and the
 * weight shape is PyTorch's [C, d] (the ONNX map's is [d, C]: `width` and `inputWidth` mean the same in both).
 * Example: `checkpointAttentionMap(openCheckpoint('sd15.safetensors')).totalRows` → 2 × (5·320 + 5·640 + 6·1280) = 24960.
 */
export function checkpointAttentionMap(ckpt: Checkpoint): CrossAttentionMap {
  const layers: CrossAttentionLayer[] = [];
  for (let i = 0; i < ckpt.kv.length; i += 2) {
    const k = ckpt.kv[i]!;
    const v = ckpt.kv[i + 1]!;
    layers.push({
      index: k.layerIndex,
      name: attentionScope(k.names.layer.diffusers),
      width: k.shape[0],
      k: projection(k),
      v: projection(v),
    });
  }
  return { conditioningInput: 'encoder_hidden_states', d: ckpt.d, layers, totalRows: layers.reduce((s, l) => s + 2 * l.width, 0) };
}

/**
 * The fingerprint of a checkpoint for edit files: sha256 over the text encoder's fp32 values (`textSha256`, from
 * CheckpointTextEncoder.weightsSha256) and the 32 K/V weights' fp32 values in graph order, each read by offset.
 * Names and dtypes-as-stored do not enter, values do: the same weights under another layout give the same
 * fingerprint. Example: `await checkpointFingerprint(ckpt, encoder.weightsSha256)` → '3f2a…' (64 hex digits).
 */
export function checkpointFingerprint(ckpt: Checkpoint, textSha256: string): string {
  const hash = createHash('sha256');
  hash.update(`time-edit checkpoint fingerprint 1\ntext ${textSha256}\n`);
  for (const t of ckpt.kv) {
    const v = readKvWeight(t);
    hash.update(`${t.kind} ${t.shape[0]}x${t.shape[1]}\n`);
    hash.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }
  return hash.digest('hex');
}

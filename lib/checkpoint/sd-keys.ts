// The names of the tensors an edit of an SD 1.x checkpoint reads and writes, in the three namings users' files
// use: the single-file (LDM/CompVis) keys `model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`,
// the diffusers UNet keys `down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight`, and the kohya LoRA
// module names `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k`. The map between LDM and
// diffusers blocks is diffusers' (scripts/convert_diffusers_to_original_stable_diffusion.py, unet_conversion_map_layer):
// down_blocks.i.attentions.j ↔ input_blocks.(3i+j+1).1, mid_block.attentions.0 ↔ middle_block.1,
// up_blocks.i.attentions.j ↔ output_blocks.(3i+j).1. The 16 layers are listed in the order of the ONNX UNet's
// graph (down, mid, up), which is the order lib/model/cross-attention.ts finds them in, so an edit solved from a
// checkpoint patches the same layers in the same order as one solved from the ONNX export. docs/checkpoints.md.

/** One of the 16 cross-attention (attn2) layers of an SD 1.x UNet. */
export interface SdAttentionLayer {
  /** 0…15, graph order (down, mid, up) */
  index: number;
  /** LDM block path, e.g. 'input_blocks.1.1' */
  ldm: string;
  /** diffusers block path, e.g. 'down_blocks.0.attentions.0' */
  diffusers: string;
  /** the projections' output width C in SD 1.x (320, 640 or 1280) */
  width: number;
}

const layers: SdAttentionLayer[] = [];
const SD_WIDTHS = [320, 640, 1280, 1280];
for (let i = 0; i < 3; i++)
  for (let j = 0; j < 2; j++)
    layers.push({
      index: layers.length,
      ldm: `input_blocks.${3 * i + j + 1}.1`,
      diffusers: `down_blocks.${i}.attentions.${j}`,
      width: SD_WIDTHS[i]!,
    });
layers.push({ index: layers.length, ldm: 'middle_block.1', diffusers: 'mid_block.attentions.0', width: 1280 });
for (let i = 1; i < 4; i++)
  for (let j = 0; j < 3; j++)
    layers.push({
      index: layers.length,
      ldm: `output_blocks.${3 * i + j}.1`,
      diffusers: `up_blocks.${i}.attentions.${j}`,
      width: SD_WIDTHS[3 - i]!,
    });

/** The 16 cross-attention layers of SD 1.x, in graph order. Example: `SD_ATTENTION_LAYERS[6].ldm` → 'middle_block.1'. */
export const SD_ATTENTION_LAYERS: readonly SdAttentionLayer[] = layers;

/** The prefix of UNet keys in a single-file checkpoint. */
export const SINGLE_FILE_UNET_PREFIX = 'model.diffusion_model.';

export type KvKind = 'k' | 'v';

/** The path below a block, the same in both namings (to_k/to_v have no bias). */
function innerPath(kind: KvKind): string {
  return `transformer_blocks.0.attn2.to_${kind}`;
}

/**
 * The single-file key of a K/V weight. Example: `singleFileKvKey(SD_ATTENTION_LAYERS[0], 'k')` →
 * 'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight'.
 */
export function singleFileKvKey(layer: SdAttentionLayer, kind: KvKind): string {
  return `${SINGLE_FILE_UNET_PREFIX}${layer.ldm}.${innerPath(kind)}.weight`;
}

/**
 * The key of a K/V weight in a diffusers `unet/diffusion_pytorch_model.safetensors`. Example:
 * `diffusersKvKey(SD_ATTENTION_LAYERS[0], 'v')` → 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight'.
 */
export function diffusersKvKey(layer: SdAttentionLayer, kind: KvKind): string {
  return `${layer.diffusers}.${innerPath(kind)}.weight`;
}

/**
 * The kohya LoRA module name (diffusers naming, `.` → `_`) of a K/V projection, which diffusers, ComfyUI, A1111,
 * Forge and kohya all load. Example: `kohyaModuleName(SD_ATTENTION_LAYERS[6], 'k')` →
 * 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k'.
 */
export function kohyaModuleName(layer: SdAttentionLayer, kind: KvKind): string {
  return `lora_unet_${layer.diffusers}.${innerPath(kind)}`.replaceAll('.', '_');
}

/** One of the 32 K/V projections with its names in every layout. */
export interface SdKvKey {
  /** 0…31: layer 0 K, layer 0 V, layer 1 K, … */
  position: number;
  layer: SdAttentionLayer;
  kind: KvKind;
  singleFile: string;
  diffusers: string;
  kohya: string;
}

/** The 32 K/V projections in graph order, K before V in each layer. Example: `SD_KV_KEYS[1].kohya` ends in '_attn2_to_v'. */
export const SD_KV_KEYS: readonly SdKvKey[] = layers.flatMap((layer) =>
  (['k', 'v'] as const).map((kind) => ({
    position: 2 * layer.index + (kind === 'k' ? 0 : 1),
    layer,
    kind,
    singleFile: singleFileKvKey(layer, kind),
    diffusers: diffusersKvKey(layer, kind),
    kohya: kohyaModuleName(layer, kind),
  })),
);

/**
 * An LDM UNet path (with or without `model.diffusion_model.`) in diffusers naming, for the 16 attention blocks;
 * undefined for any other key. Example: `ldmToDiffusers('model.diffusion_model.output_blocks.3.1.proj_in.weight')`
 * → 'up_blocks.1.attentions.0.proj_in.weight'.
 */
export function ldmToDiffusers(key: string): string | undefined {
  const rest = key.startsWith(SINGLE_FILE_UNET_PREFIX) ? key.slice(SINGLE_FILE_UNET_PREFIX.length) : key;
  for (const l of layers) if (rest.startsWith(`${l.ldm}.`)) return l.diffusers + rest.slice(l.ldm.length);
  return undefined;
}

/**
 * A diffusers attention-block key in single-file naming (with `model.diffusion_model.`); undefined for any other
 * key. Example: `diffusersToLdm('mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight')` →
 * 'model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight'.
 */
export function diffusersToLdm(key: string): string | undefined {
  for (const l of layers) if (key.startsWith(`${l.diffusers}.`)) return SINGLE_FILE_UNET_PREFIX + l.ldm + key.slice(l.diffusers.length);
  return undefined;
}

/**
 * Where the CLIP text encoder's `text_model.*` tensors may sit, most common first. Single files use
 * `cond_stage_model.transformer.text_model.` (some older files drop `text_model.`: AUTOMATIC1111's
 * checkpoint_dict_replacements_sd1 maps them back); diffusers `text_encoder/model.safetensors` uses `text_model.`
 * (newer transformers writers may drop it). Both are accepted.
 */
export const TEXT_ENCODER_PREFIXES = {
  'single-file': ['cond_stage_model.transformer.text_model.', 'cond_stage_model.transformer.'],
  diffusers: ['text_model.', ''],
} as const;

/** Keys whose presence marks another model family, with its name (diffusers single_file_utils CHECKPOINT_KEY_NAMES). */
export const OTHER_FAMILY_MARKERS: readonly { prefix: string; family: string }[] = [
  { prefix: 'conditioner.embedders.1.', family: 'an SDXL checkpoint' },
  { prefix: 'conditioner.embedders.0.', family: 'an SDXL-family checkpoint' },
  { prefix: 'cond_stage_model.model.', family: 'an SD 2.x checkpoint with an OpenCLIP text encoder' },
  { prefix: 'text_encoders.', family: 'an SD 3 checkpoint' },
  { prefix: 'model.diffusion_model.joint_blocks.', family: 'an SD 3 checkpoint' },
  { prefix: 'double_blocks.', family: 'a Flux checkpoint' },
];

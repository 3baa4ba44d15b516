// The `time-edit/checkpoint` entry point: reading SD 1.x safetensors checkpoints (single files and diffusers
// folders) by offset, their key maps, and their CLIP text encoder run from the checkpoint's own weights
// (docs/checkpoints.md). Re-exports only.
export { CheckpointError } from './checkpoint-error.js';
export {
  openSafetensorsFile,
  parseSafetensorsHeader,
  readTensorBytes,
  readTensorF32,
  bytesToFloat32,
  isFloatDtype,
  SAFETENSORS_DTYPE_BITS,
  MAX_SAFETENSORS_HEADER_BYTES,
} from './safetensors-file.js';
export type { SafetensorsFile, TensorEntry, SafetensorsDtype, FloatDtype } from './safetensors-file.js';
export {
  SD_ATTENTION_LAYERS,
  SD_KV_KEYS,
  SINGLE_FILE_UNET_PREFIX,
  TEXT_ENCODER_PREFIXES,
  OTHER_FAMILY_MARKERS,
  singleFileKvKey,
  diffusersKvKey,
  kohyaModuleName,
  ldmToDiffusers,
  diffusersToLdm,
} from './sd-keys.js';
export type { SdAttentionLayer, SdKvKey, KvKind } from './sd-keys.js';
export { openCheckpoint, detectModelPath, readKvWeight } from './open-checkpoint.js';
export type {
  Checkpoint,
  CheckpointKind,
  KvTensor,
  TextEncoderConfig,
  TextEncoderTensors,
  OpenCheckpointOptions,
  ModelPathKind,
} from './open-checkpoint.js';
export { buildClipTextModel, clipTextWeights, CLIP_TEXT_INPUT, CLIP_TEXT_OUTPUT } from './clip-text-graph.js';
export type { GraphWeight } from './clip-text-graph.js';
export { CheckpointTextEncoder } from './text-encoder.js';
export type { CheckpointTextEncoderOptions, TextEncoderTimings } from './text-encoder.js';
export { checkpointAttentionMap, checkpointFingerprint, attentionScope } from './attention-map.js';

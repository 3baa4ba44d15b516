// Opening an SD 1.x checkpoint for an edit: a single `.safetensors` file (LDM keys) or a diffusers folder
// (`unet/diffusion_pytorch_model[.fp16].safetensors`, `text_encoder/model[.fp16].safetensors`, `tokenizer/`).
// Only headers are read here; the result says where each of the 32 K/V weights and each text-encoder tensor is,
// with its dtype and shape, after checking that the file is SD 1.x-shaped. Other families are refused by name
// (SDXL `conditioner.embedders.1…`, SD 2.x K/V of width 1024 or an OpenCLIP text encoder, inpainting UNets with 9
// input channels), and so are Python pickles (`.ckpt`, `.bin`, `.pt`): they are never unpickled, since
// unpickling runs code the file chooses, and every SD 1.x model is distributed or convertible as safetensors
// (the message says how). Key facts and sources: docs/checkpoints.md.
import { existsSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CheckpointError } from './checkpoint-error.js';
import { isFloatDtype, openSafetensorsFile, readTensorF32, type FloatDtype, type SafetensorsFile } from './safetensors-file.js';
import { OTHER_FAMILY_MARKERS, SD_KV_KEYS, SINGLE_FILE_UNET_PREFIX, TEXT_ENCODER_PREFIXES, type SdKvKey } from './sd-keys.js';

export type CheckpointKind = 'single-file' | 'diffusers';

/** Where one of the 32 K/V weights is. */
export interface KvTensor {
  /** the SD layer (graph order) and its names in every layout */
  names: SdKvKey;
  /** 0…15 */
  layerIndex: number;
  kind: 'k' | 'v';
  /** the tensor's key in `file` */
  key: string;
  file: SafetensorsFile;
  dtype: FloatDtype;
  /** [C, d]: PyTorch's Linear weight [out, in] */
  shape: [number, number];
}

/** The CLIP text encoder's architecture, read from the tensor shapes (and config.json where there is one). */
export interface TextEncoderConfig {
  vocabSize: number;
  width: number;
  layers: number;
  heads: number;
  mlpWidth: number;
  positions: number;
  layerNormEps: number;
}

/** Where the text encoder's tensors are: `key('final_layer_norm.weight')` is the full key in `file`. */
export interface TextEncoderTensors {
  file: SafetensorsFile;
  /** the prefix before the `text_model.`-relative names, e.g. 'cond_stage_model.transformer.text_model.' */
  prefix: string;
  config: TextEncoderConfig;
  /** every `text_model.`-relative tensor name the encoder reads, in a fixed order */
  names: string[];
  key(name: string): string;
}

/** An opened checkpoint: headers read, layout checked, nothing else read. */
export interface Checkpoint {
  kind: CheckpointKind;
  /** the path given (the file, or the diffusers folder) */
  path: string;
  /** the safetensors files read (one for a single file; unet and text_encoder for a folder) */
  files: SafetensorsFile[];
  /** the 32 K/V weights in graph order (layer 0 K, layer 0 V, …) */
  kv: KvTensor[];
  /** d, the K/V input width = the text encoder's width */
  d: number;
  textEncoder: TextEncoderTensors;
  /** the folder's tokenizer/ (diffusers), or undefined (a single file holds no tokenizer) */
  tokenizerDir: string | undefined;
}

export interface OpenCheckpointOptions {
  /**
   * The text encoder's attention heads. Default: a diffusers folder's text_encoder/config.json
   * `num_attention_heads`, else width / 64 (CLIP's rule, heads = width // 64: 12 for CLIP ViT-L/14).
   */
  textHeads?: number;
}

const PICKLE_SUFFIXES = ['.ckpt', '.bin', '.pt', '.pth', '.pkl', '.pickle'];

/** A one-line refusal of a Python pickle, with the way to convert it. */
function pickleRefusal(path: string): CheckpointError {
  return new CheckpointError(
    path,
    `${path} is a Python pickle (PyTorch .ckpt/.bin/.pt), which time-edit does not load because unpickling runs code the file chooses; ` +
      'convert it to safetensors first (e.g. python3 -c "import torch, safetensors.torch as s; ' +
      "d = torch.load('model.ckpt', map_location='cpu', weights_only=True); d = d.get('state_dict', d); " +
      "s.save_file({k: v.contiguous() for k, v in d.items() if isinstance(v, torch.Tensor)}, 'model.safetensors')\")",
  );
}

/** True when the file starts like a pickle (protocol 2+ opcode 0x80) or a zip archive (torch.save since 1.6). */
function looksLikePickle(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const b = new Uint8Array(4);
    const n = readSync(fd, b, 0, 4, 0);
    return (n >= 2 && b[0] === 0x80 && b[1]! >= 2 && b[1]! <= 5) || (n === 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 3 && b[3] === 4);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The safetensors file `dir/name[.fp16].safetensors` (full precision first), a pickle refusal, or undefined. */
function findWeights(dir: string, stem: string): string | undefined {
  for (const suffix of ['.safetensors', '.fp16.safetensors']) {
    const p = join(dir, stem + suffix);
    if (existsSync(p)) return p;
  }
  for (const suffix of ['.bin', '.fp16.bin']) {
    const p = join(dir, stem + suffix);
    if (existsSync(p)) throw pickleRefusal(p);
  }
  return undefined;
}

/** Refuses files of another model family by the keys that mark it. */
function refuseOtherFamilies(file: SafetensorsFile): void {
  const lora = [...file.tensors.keys()].find((n) => /^lora_(unet|te\d?)_/.test(n) || /\.lora_(A|B|up|down)\./.test(n));
  if (lora !== undefined)
    throw new CheckpointError(
      file.path,
      `${file.path} is a LoRA (it has ${lora}), not a model checkpoint: give the model it was made for`,
      { tensor: lora },
    );
  for (const name of file.tensors.keys())
    for (const m of OTHER_FAMILY_MARKERS)
      if (name.startsWith(m.prefix))
        throw new CheckpointError(file.path, `${file.path} is ${m.family} (it has ${name}); time-edit edits SD 1.x models only`, {
          tensor: name,
        });
}

/** What a file without the SD 1.x UNet keys is, for the message. */
function describeMissingUnet(file: SafetensorsFile, kind: CheckpointKind): string {
  const names = [...file.tensors.keys()];
  if (names.some((n) => n.startsWith('lora_unet_') || n.startsWith('lora_te') || n.includes('.lora_A.') || n.includes('.lora_down.')))
    return 'it is a LoRA, not a model';
  if (kind === 'single-file' && !names.some((n) => n.startsWith(SINGLE_FILE_UNET_PREFIX)))
    return `it has no UNet (no ${SINGLE_FILE_UNET_PREFIX}* tensors): a VAE, text encoder or diffusers-keyed UNet alone is not a checkpoint`;
  return 'not an SD 1.x checkpoint';
}

function readKv(file: SafetensorsFile, kind: CheckpointKind): KvTensor[] {
  const out: KvTensor[] = [];
  for (const names of SD_KV_KEYS) {
    const key = kind === 'single-file' ? names.singleFile : names.diffusers;
    const e = file.tensors.get(key);
    if (e === undefined)
      throw new CheckpointError(file.path, `${file.path} has no tensor ${key}: ${describeMissingUnet(file, kind)}`, { tensor: key });
    if (!isFloatDtype(e.dtype))
      throw new CheckpointError(file.path, `${file.path}: tensor ${key} is ${e.dtype}, not F32, F16 or BF16`, { tensor: key });
    if (e.shape.length !== 2 || e.shape[0]! === 0 || e.shape[1]! === 0)
      throw new CheckpointError(file.path, `${file.path}: tensor ${key} has shape [${e.shape}], expected [C, 768]`, { tensor: key });
    out.push({ names, layerIndex: names.layer.index, kind: names.kind, key, file, dtype: e.dtype, shape: [e.shape[0]!, e.shape[1]!] });
  }
  const d = out[0]!.shape[1];
  if (d === 1024)
    throw new CheckpointError(
      file.path,
      `${file.path} is an SD 2.x checkpoint (its cross-attention K/V take width 1024, SD 1.x's take 768); time-edit edits SD 1.x models only`,
      {
        tensor: out[0]!.key,
      },
    );
  for (const t of out) {
    if (t.shape[1] !== d)
      throw new CheckpointError(file.path, `${file.path}: tensor ${t.key} has shape [${t.shape}], the other K/V weights take width ${d}`, {
        tensor: t.key,
      });
  }
  for (let i = 0; i < out.length; i += 2)
    if (out[i]!.shape[0] !== out[i + 1]!.shape[0])
      throw new CheckpointError(
        file.path,
        `${file.path}: K and V of ${out[i]!.names.layer.ldm} have different widths (${out[i]!.shape[0]}, ${out[i + 1]!.shape[0]})`,
        {
          tensor: out[i + 1]!.key,
        },
      );
  return out;
}

/** Refuses an inpainting (9 input channels) or other non-4-channel UNet when its first convolution is in the file. */
function refuseInpainting(file: SafetensorsFile, kind: CheckpointKind): void {
  const key = kind === 'single-file' ? `${SINGLE_FILE_UNET_PREFIX}input_blocks.0.0.weight` : 'conv_in.weight';
  const e = file.tensors.get(key);
  if (e === undefined || e.shape.length !== 4) return;
  const channels = e.shape[1]!;
  if (channels === 9)
    throw new CheckpointError(
      file.path,
      `${file.path} is an inpainting checkpoint (its UNet takes 9 input channels, ${key}); time-edit edits text-to-image SD 1.x models only`,
      {
        tensor: key,
      },
    );
  if (channels !== 4)
    throw new CheckpointError(
      file.path,
      `${file.path}: its UNet takes ${channels} input channels (${key}), not SD 1.x's 4 (an instruct-pix2pix or depth model?)`,
      {
        tensor: key,
      },
    );
}

/** The text encoder's per-layer tensor names (relative to the prefix), with their expected shapes. */
function layerTensors(i: number, w: number, mlp: number): [string, number[]][] {
  const p = `encoder.layers.${i}.`;
  return [
    [`${p}layer_norm1.weight`, [w]],
    [`${p}layer_norm1.bias`, [w]],
    ...(['q', 'k', 'v', 'out'] as const).flatMap((x): [string, number[]][] => [
      [`${p}self_attn.${x}_proj.weight`, [w, w]],
      [`${p}self_attn.${x}_proj.bias`, [w]],
    ]),
    [`${p}layer_norm2.weight`, [w]],
    [`${p}layer_norm2.bias`, [w]],
    [`${p}mlp.fc1.weight`, [mlp, w]],
    [`${p}mlp.fc1.bias`, [mlp]],
    [`${p}mlp.fc2.weight`, [w, mlp]],
    [`${p}mlp.fc2.bias`, [w]],
  ];
}

/** text_encoder/config.json's heads, eps and activation, when a diffusers folder has one. */
function readTextConfig(path: string): { heads?: number; eps?: number } {
  if (!existsSync(path)) return {};
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(readFileBounded(path))));
  } catch (err) {
    throw new CheckpointError(path, `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new CheckpointError(path, `${path} is not a JSON object`);
  const c = json as Record<string, unknown>;
  if (c.hidden_act !== undefined && c.hidden_act !== 'quick_gelu')
    throw new CheckpointError(
      path,
      `${path}: hidden_act is ${JSON.stringify(c.hidden_act)}; SD 1.x's CLIP text encoder uses quick_gelu, the only one supported`,
    );
  const out: { heads?: number; eps?: number } = {};
  if (c.num_attention_heads !== undefined) {
    if (!Number.isSafeInteger(c.num_attention_heads) || (c.num_attention_heads as number) < 1)
      throw new CheckpointError(
        path,
        `${path}: num_attention_heads must be a positive integer, got ${JSON.stringify(c.num_attention_heads)}`,
      );
    out.heads = c.num_attention_heads as number;
  }
  if (c.layer_norm_eps !== undefined) {
    if (typeof c.layer_norm_eps !== 'number' || !(c.layer_norm_eps > 0))
      throw new CheckpointError(path, `${path}: layer_norm_eps must be a number > 0, got ${JSON.stringify(c.layer_norm_eps)}`);
    out.eps = c.layer_norm_eps;
  }
  return out;
}

/** A small file's bytes (config.json); 1 MiB at most. */
function readFileBounded(path: string): Uint8Array {
  const size = statSync(path).size;
  if (size > 1024 ** 2) throw new CheckpointError(path, `${path} is ${size} bytes, too large for a config file`);
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, b, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return b.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

function findTextEncoder(
  file: SafetensorsFile,
  kind: CheckpointKind,
  config: { heads?: number; eps?: number },
  options: OpenCheckpointOptions,
): TextEncoderTensors {
  const prefix = TEXT_ENCODER_PREFIXES[kind].find((p) => file.tensors.has(`${p}embeddings.token_embedding.weight`));
  if (prefix === undefined) {
    const expected = `${TEXT_ENCODER_PREFIXES[kind][0]}embeddings.token_embedding.weight`;
    throw new CheckpointError(file.path, `${file.path} has no CLIP text encoder (no ${expected}): not an SD 1.x checkpoint`, {
      tensor: expected,
    });
  }
  const key = (name: string): string => prefix + name;
  const need = (name: string, shape: number[] | null): number[] => {
    const e = file.tensors.get(key(name));
    if (e === undefined)
      throw new CheckpointError(file.path, `${file.path} has no tensor ${key(name)} (text encoder incomplete)`, { tensor: key(name) });
    if (!isFloatDtype(e.dtype))
      throw new CheckpointError(file.path, `${file.path}: tensor ${key(name)} is ${e.dtype}, not F32, F16 or BF16`, { tensor: key(name) });
    if (shape !== null && (e.shape.length !== shape.length || e.shape.some((s, i) => s !== shape[i])))
      throw new CheckpointError(file.path, `${file.path}: tensor ${key(name)} has shape [${e.shape}], expected [${shape}]`, {
        tensor: key(name),
      });
    return e.shape;
  };
  const tok = need('embeddings.token_embedding.weight', null);
  if (tok.length !== 2)
    throw new CheckpointError(
      file.path,
      `${file.path}: tensor ${key('embeddings.token_embedding.weight')} has shape [${tok}], expected [vocab, width]`,
    );
  const [vocabSize, width] = tok as [number, number];
  const pos = need('embeddings.position_embedding.weight', null);
  if (pos.length !== 2 || pos[1] !== width)
    throw new CheckpointError(
      file.path,
      `${file.path}: tensor ${key('embeddings.position_embedding.weight')} has shape [${pos}], expected [77, ${width}]`,
    );
  let layers = 0;
  while (file.tensors.has(key(`encoder.layers.${layers}.layer_norm1.weight`))) layers++;
  if (layers === 0)
    throw new CheckpointError(file.path, `${file.path} has no text encoder layers (no ${key('encoder.layers.0.layer_norm1.weight')})`);
  const fc1 = need('encoder.layers.0.mlp.fc1.weight', null);
  const mlpWidth = fc1[0] ?? 0;
  const names = ['embeddings.token_embedding.weight', 'embeddings.position_embedding.weight'];
  for (let i = 0; i < layers; i++)
    for (const [name, shape] of layerTensors(i, width, mlpWidth)) {
      need(name, shape);
      names.push(name);
    }
  need('final_layer_norm.weight', [width]);
  need('final_layer_norm.bias', [width]);
  names.push('final_layer_norm.weight', 'final_layer_norm.bias');
  const heads = options.textHeads ?? config.heads ?? width / 64;
  if (!Number.isSafeInteger(heads) || heads < 1 || width % heads !== 0)
    throw new CheckpointError(
      file.path,
      `${file.path}: a text encoder of width ${width} cannot have ${heads} attention heads (give the number of heads)`,
    );
  return {
    file,
    prefix,
    config: { vocabSize, width, layers, heads, mlpWidth, positions: pos[0]!, layerNormEps: config.eps ?? 1e-5 },
    names,
    key,
  };
}

/** What a --model path holds, from the path alone (no file is parsed beyond its first bytes). */
export type ModelPathKind = 'onnx-folder' | 'diffusers' | 'single-file';

/**
 * Tells an ONNX pipeline folder (unet/model.onnx), a diffusers folder (unet/diffusion_pytorch_model[.fp16].safetensors)
 * and a single safetensors file apart; a pickle is refused (CheckpointError), anything else is left to the loader of
 * the kind it looks most like ('onnx-folder' for folders, whose loader names what is missing).
 * Example: `detectModelPath('models/toy-shapes')` → 'onnx-folder'.
 */
export function detectModelPath(path: string): ModelPathKind {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    return 'onnx-folder';
  }
  if (!isDir) {
    if (PICKLE_SUFFIXES.some((s) => path.toLowerCase().endsWith(s)) || looksLikePickle(path)) throw pickleRefusal(path);
    return 'single-file';
  }
  if (existsSync(join(path, 'unet', 'model.onnx'))) return 'onnx-folder';
  const unet = join(path, 'unet');
  if (existsSync(unet) && findWeights(unet, 'diffusion_pytorch_model') !== undefined) return 'diffusers';
  return 'onnx-folder';
}

/**
 * Opens an SD 1.x checkpoint, a single `.safetensors` file or a diffusers folder, reading headers only, and checks
 * its layout (see the file's header comment). Throws CheckpointError with a one-line message naming the file (and
 * the tensor) when it is not an SD 1.x checkpoint or is damaged.
 * Example: `const c = openCheckpoint('v1-5-pruned-emaonly.safetensors'); c.kv.length` → 32, `c.d` → 768.
 */
export function openCheckpoint(path: string, options: OpenCheckpointOptions = {}): Checkpoint {
  const kind: CheckpointKind = detectModelPath(path) === 'diffusers' ? 'diffusers' : 'single-file';
  if (kind === 'single-file') {
    let isDir = false;
    try {
      isDir = statSync(path).isDirectory();
    } catch (err) {
      throw new CheckpointError(path, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (isDir)
      throw new CheckpointError(
        path,
        `${path} is neither an ONNX pipeline folder nor a diffusers folder with unet/diffusion_pytorch_model.safetensors`,
      );
    const file = openSafetensorsFile(path);
    refuseOtherFamilies(file);
    const textEncoder = findTextEncoder(file, kind, {}, options);
    const kv = readKv(file, kind);
    refuseInpainting(file, kind);
    return finish({ kind, path, files: [file], kv, textEncoder, tokenizerDir: undefined });
  }
  const unetPath = findWeights(join(path, 'unet'), 'diffusion_pytorch_model')!;
  const textPath = findWeights(join(path, 'text_encoder'), 'model');
  if (textPath === undefined)
    throw new CheckpointError(join(path, 'text_encoder'), `${path} has no text_encoder/model.safetensors (nor model.fp16.safetensors)`);
  const unet = openSafetensorsFile(unetPath);
  const text = openSafetensorsFile(textPath);
  refuseOtherFamilies(text);
  const kv = readKv(unet, kind);
  refuseInpainting(unet, kind);
  const textEncoder = findTextEncoder(text, kind, readTextConfig(join(path, 'text_encoder', 'config.json')), options);
  const tok = join(path, 'tokenizer');
  return finish({ kind, path, files: [unet, text], kv, textEncoder, tokenizerDir: existsSync(tok) ? tok : undefined });
}

function finish(c: Omit<Checkpoint, 'd'>): Checkpoint {
  const d = c.kv[0]!.shape[1];
  if (d !== c.textEncoder.config.width)
    throw new CheckpointError(
      c.kv[0]!.file.path,
      `${basename(c.path)}: the UNet's K/V take width ${d} but the text encoder gives ${c.textEncoder.config.width}: the UNet and text encoder do not belong together`,
    );
  return { ...c, d };
}

/**
 * One K/V weight's values as float32, [C, d] row-major (PyTorch's [out, in]), read by offset whatever its dtype.
 * Example: `readKvWeight(openCheckpoint('model.safetensors').kv[0]).length` → 320 × 768.
 */
export function readKvWeight(t: KvTensor): Float32Array {
  return readTensorF32(t.file, t.key);
}

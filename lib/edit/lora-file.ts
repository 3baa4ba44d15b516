// Kohya-format LoRA files of an edit, the format diffusers (load_lora_weights), ComfyUI, AUTOMATIC1111, Forge and
// kohya's sd-scripts all load (docs/lora.md has the sources): per module `<name>.lora_down.weight` [r, d],
// `<name>.lora_up.weight` [out, r] and `<name>.alpha` (0-dim), with `<name>` the kohya module name in diffusers naming
// (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k`) and ΔW = (alpha / r)·up·down. Written with
// one rank r for every module and alpha = r (scale 1; diffusers applies one alpha per attention layer and reads 0 as
// "no change" where kohya reads it as "alpha = r", so alpha is never 0), F32 tensors, no other key (diffusers refuses
// a kohya file with any key it does not pair up), and string metadata: kohya's `ss_*` keys, ModelSpec's
// `modelspec.*`, and `time_edit.*` (the prompts, λ, rank, truncation and the model fingerprint), so that the tool can
// load its own LoRAs back (lora-edit.ts). Reading refuses, by key, any LoRA that touches more than attn2 to_k/to_v.
import { CheckpointError } from '../checkpoint/checkpoint-error.js';
import { openSafetensorsFile, readTensorF32, type SafetensorsFile } from '../checkpoint/safetensors-file.js';
import { SD_KV_KEYS } from '../checkpoint/sd-keys.js';
import { writeFileAtomicSync } from '../fs/durable-file.js';
import { type Edit, EditError } from './edit.js';
import type { LoraFactors } from './lora-factor.js';
import { attentionModule, kohyaName } from './lora-modules.js';
import { encodeSafetensors, type NamedTensor } from './safetensors.js';

/** The `time_edit.format` value of a LoRA this tool writes. */
export const LORA_FORMAT = 'time-edit-lora/1';

/** What a LoRA's metadata says about the edit and the model. */
export interface LoraDescription {
  /** The fingerprint of the model the edit was computed for (lib/edit/fingerprint.ts, or a checkpoint's). */
  fingerprint: string;
  /** modelspec.title and ss_output_name; default from the first pair ("a circle → a purple circle"). */
  title?: string;
  /** The model's native image size in pixels (modelspec.resolution); default 512. */
  resolution?: number;
}

/**
 * The edit's steps as metadata (prompts, λ, mode, layers; not D and G, which the tensors replace): the
 * `time_edit.steps` value of a LoRA and of a merged checkpoint. Example: `JSON.parse(stepsMetadata(edit))[0].lambda`.
 */
export function stepsMetadata(edit: Edit): string {
  return JSON.stringify(
    edit.steps.map((s) => ({
      pairs: s.pairs,
      preserve: s.preserve,
      lambda: s.lambda,
      augmentations: s.augmentations,
      mode: s.mode,
      ...(s.layers !== undefined ? { layers: s.layers } : {}),
      rows: s.rows,
    })),
  );
}

/**
 * The metadata of a LoRA of `edit` (every value a string, as the safetensors format requires).
 *
 * @example
 *   loraMetadata(lora, edit, { fingerprint: edit.fingerprint })['ss_network_dim'];   // String(lora.rank)
 */
export function loraMetadata(lora: LoraFactors, edit: Edit, description: LoraDescription): Record<string, string> {
  const first = edit.steps[0]?.pairs[0];
  const title = description.title ?? (first !== undefined ? `${first.source} → ${first.destination}` : 'time-edit edit');
  const size = description.resolution ?? 512;
  const lambdas = [...new Set(edit.steps.map((s) => s.lambda))];
  return {
    ss_network_module: 'networks.lora',
    ss_network_dim: String(lora.rank),
    ss_network_alpha: String(lora.rank),
    ss_network_args: '{}',
    ss_base_model_version: 'sd_v1',
    ss_v2: 'False',
    ss_output_name: title,
    'modelspec.sai_model_spec': '1.0.1',
    'modelspec.architecture': 'stable-diffusion-v1/lora',
    'modelspec.implementation': 'diffusers',
    'modelspec.title': title,
    'modelspec.resolution': `${size}x${size}`,
    'modelspec.description':
      `TIME edit (Orgad, Kawar and Belinkov, ICCV 2023) of the cross-attention K/V projections, made by time-edit: ` +
      edit.steps.flatMap((s) => s.pairs.map((p) => `"${p.source}" → "${p.destination}"`)).join(', ') +
      ` (λ ${lambdas.join(', ')}); rank ${lora.rank} of ${lora.exactRank}${lora.rank < lora.exactRank ? `, ${lora.truncation} truncation` : ' (exact)'}`,
    'time_edit.format': LORA_FORMAT,
    'time_edit.fingerprint': description.fingerprint,
    'time_edit.d': String(lora.d),
    'time_edit.source': first?.source ?? '',
    'time_edit.destination': first?.destination ?? '',
    'time_edit.lambda': lambdas.join(','),
    'time_edit.rank': String(lora.rank),
    'time_edit.exact_rank': String(lora.exactRank),
    'time_edit.truncation': lora.rank < lora.exactRank ? lora.truncation : 'none',
    'time_edit.steps': stepsMetadata(edit),
  };
}

/**
 * The bytes of the kohya LoRA file of `lora` (tensors in name order; see the header comment).
 *
 * @example
 *   writeFileSync('edit-lora.safetensors', encodeLora(factorEdit(weights, edit), edit, { fingerprint: edit.fingerprint }));
 */
export function encodeLora(lora: LoraFactors, edit: Edit, description: LoraDescription): Uint8Array {
  const tensors: [string, NamedTensor][] = [];
  for (const m of lora.modules) {
    const name = kohyaName(m.module, m.path);
    for (const [what, data] of [
      ['up', m.up],
      ['down', m.down],
    ] as const)
      for (let i = 0; i < data.length; i++)
        if (!Number.isFinite(data[i]!))
          throw new EditError(`cannot write the LoRA: ${name}.lora_${what}.weight has the value ${data[i]} at index ${i}`);
    tensors.push([`${name}.alpha`, { dtype: 'F32', shape: [], data: new Float32Array([lora.rank]) }]);
    tensors.push([`${name}.lora_down.weight`, { dtype: 'F32', shape: [lora.rank, lora.d], data: m.down }]);
    tensors.push([`${name}.lora_up.weight`, { dtype: 'F32', shape: [m.rows, lora.rank], data: m.up }]);
  }
  tensors.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return encodeSafetensors({ tensors: new Map(tensors), metadata: loraMetadata(lora, edit, description) });
}

/**
 * Writes the LoRA atomically (temp file + rename; the parent folder is created if missing).
 *
 * @example
 *   saveLora('out/edit-lora.safetensors', factorEdit(weights, edit, { rank: 64 }), edit, { fingerprint: ctx.fingerprint });
 */
export function saveLora(path: string, lora: LoraFactors, edit: Edit, description: LoraDescription): void {
  writeFileAtomicSync(path, encodeLora(lora, edit, description));
}

/** One module of a LoRA file read back: ΔW = scale·up·down. */
export interface LoraFileModule {
  module: string;
  path: 'k' | 'v';
  rank: number;
  rows: number;
  d: number;
  up: Float32Array;
  down: Float32Array;
  /** alpha / rank (alpha absent or 0: 1, as kohya reads it) */
  scale: number;
}

/** A LoRA file read back: its K/V modules and its metadata. */
export interface LoraFile {
  path: string;
  modules: LoraFileModule[];
  metadata: Record<string, string>;
}

const KOHYA_KV = new Map(SD_KV_KEYS.map((k) => [k.kohya, k]));
const PART = /^(lora_[A-Za-z0-9_]+?)\.(lora_down\.weight|lora_up\.weight|alpha)$/;

/**
 * Whether a safetensors file's header looks like a kohya LoRA (kohya metadata, or `lora_*` keys) rather than a
 * time-edit edit file. Reads the header only.
 *
 * @example
 *   isLoraFile('out/edit-lora.safetensors');   // true
 */
export function isLoraFile(path: string): boolean {
  let file: SafetensorsFile;
  try {
    file = openSafetensorsFile(path);
  } catch {
    return false;
  }
  if (file.metadata.ss_network_module !== undefined || file.metadata['time_edit.format'] === LORA_FORMAT) return true;
  const names = [...file.tensors.keys()];
  return names.length > 0 && names.every((n) => n.startsWith('lora_'));
}

/**
 * Reads a kohya LoRA of the cross-attention K/V projections: every key must be `<module>.lora_down.weight`,
 * `<module>.lora_up.weight` or `<module>.alpha` of one of SD 1.x's 32 attn2 to_k/to_v modules; any other key is
 * refused by name (EditError), as are mismatched shapes and non-finite values.
 *
 * @example
 *   const lora = readLoraFile('out/edit-lora.safetensors');
 *   lora.modules.length;   // 32
 */
export function readLoraFile(path: string): LoraFile {
  let file: SafetensorsFile;
  try {
    file = openSafetensorsFile(path);
  } catch (err) {
    throw new EditError((err as Error).message, { cause: err });
  }
  const bad = (what: string): never => {
    throw new EditError(`${path}: ${what}`);
  };
  const parts = new Map<string, { down?: string; up?: string; alpha?: string }>();
  for (const name of file.tensors.keys()) {
    const m = PART.exec(name);
    if (m === null || !KOHYA_KV.has(m[1]!))
      bad(
        `the LoRA touches '${name}', which is not the lora_down/lora_up/alpha of a cross-attention to_k/to_v module (attn2): ` +
          'only LoRAs of those 32 projections, such as time-edit writes, can be loaded as a TIME edit',
      );
    const slot = parts.get(m![1]!) ?? {};
    const which = m![2] === 'alpha' ? 'alpha' : m![2] === 'lora_down.weight' ? 'down' : 'up';
    slot[which] = name;
    parts.set(m![1]!, slot);
  }
  if (parts.size === 0) bad('the file holds no LoRA module');
  const read = (name: string): Float32Array => {
    try {
      return readTensorF32(file, name);
    } catch (err) {
      if (err instanceof CheckpointError) throw new EditError(err.message, { cause: err });
      throw err;
    }
  };
  const modules: LoraFileModule[] = [];
  for (const key of SD_KV_KEYS) {
    const slot = parts.get(key.kohya);
    if (slot === undefined) continue;
    if (slot.down === undefined || slot.up === undefined)
      bad(`${key.kohya} lacks its ${slot.down === undefined ? 'lora_down' : 'lora_up'}.weight`);
    const downShape = file.tensors.get(slot.down!)!.shape;
    const upShape = file.tensors.get(slot.up!)!.shape;
    if (downShape.length !== 2 || upShape.length !== 2 || upShape[1] !== downShape[0])
      bad(`${key.kohya}: lora_down is [${downShape}] and lora_up [${upShape}]; expected [r, d] and [out, r]`);
    const [rank, d] = downShape as [number, number];
    const rows = upShape[0]!;
    let alpha = rank;
    if (slot.alpha !== undefined) {
      const shape = file.tensors.get(slot.alpha)!.shape;
      if (shape.reduce((a, b) => a * b, 1) !== 1) bad(`${slot.alpha} has shape [${shape}], expected a scalar`);
      const a = read(slot.alpha)[0]!;
      if (!Number.isFinite(a)) bad(`${slot.alpha} is ${a}`);
      if (a !== 0) alpha = a;
    }
    const up = read(slot.up!);
    const down = read(slot.down!);
    for (const [name, data] of [
      [slot.up!, up],
      [slot.down!, down],
    ] as const)
      for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) bad(`${name} has the value ${data[i]} at index ${i}`);
    modules.push({ module: attentionModule(key.layer), path: key.kind, rank, rows, d, up, down, scale: alpha / rank });
  }
  return { path, modules, metadata: file.metadata };
}

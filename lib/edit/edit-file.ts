// Edit files: an Edit saved as safetensors. Tensors step<i>.D and step<i>.G (n × d float32, the low-rank form);
// metadata (strings): format "time-edit/1", d, fingerprint, steps (JSON: pairs, preserve, λ, augmentations,
// mode, rows per step). Loading checks every shape against the metadata and every value (finite, |v| ≤
// MAX_EDIT_VALUE), and saving checks the values too: a NaN in D or G turns every edited image black and would
// otherwise travel on through `edit --on` into new edit files. Applying to another model is refused. A kohya LoRA
// written by `edit --lora` loads as an edit too, given the model's K/V weights (lora-edit.ts recovers its M).

import { type Edit, EditError, type EditStep } from './edit.js';
import { encodeSafetensors, readSafetensors, type NamedTensor } from './safetensors.js';
import { writeFileAtomicSync } from '../fs/durable-file.js';
import type { KvWeights } from './lora-factor.js';
import { isLoraFile, readLoraFile } from './lora-file.js';
import { loraToEdit } from './lora-edit.js';

export const EDIT_FORMAT = 'time-edit/1';

interface StepMeta {
  pairs: { source: string; destination: string }[];
  preserve: string[];
  lambda: number;
  augmentations: string[];
  mode: 'kv' | 'v' | 'k';
  /** the cross-attention layers the step edits; absent: all */
  layers?: number[];
  rows: number;
}

/**
 * The largest |value| accepted in D and G. Applying an edit sums products of a D and a G value over the rows
 * (lib/edit/edit.ts); with |v| ≤ 1e15 a product is ≤ 1e30 and a sum over even 10⁵ rows ≤ 1e35, still below the
 * float32 maximum 3.4e38, so no Inf can arise. Edits the solver makes have values of order 1; 3e38 or 1e20 only
 * come from a damaged file.
 */
export const MAX_EDIT_VALUE = 1e15;

/** Index and value of the first entry of `data` that is not finite or exceeds MAX_EDIT_VALUE in size; undefined when all are fine. */
function firstBadValue(data: Float32Array): { index: number; value: number } | undefined {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!(Math.abs(v) <= MAX_EDIT_VALUE)) return { index: i, value: v }; // NaN fails the comparison too
  }
  return undefined;
}

function describeBad(tensor: string, bad: { index: number; value: number }): string {
  return `tensor ${tensor} has the value ${bad.value} at index ${bad.index} (every value must be finite with |v| ≤ ${MAX_EDIT_VALUE})`;
}

/**
 * Writes the edit atomically (temp file + rename), creating the parent folder if missing; refuses (EditError naming
 * the tensor and index) an edit with a value that is not finite or exceeds MAX_EDIT_VALUE.
 * Example: `saveEdit('out/edit.safetensors', computed.edit)`.
 */
export function saveEdit(path: string, edit: Edit): void {
  writeFileAtomicSync(path, encodeEdit(edit, path));
}

/**
 * The bytes of the edit file of `edit`, after the checks saveEdit makes (`path` names the file in messages): for
 * writers that put several files in place together (lib/fs/durable-file.ts writeFilesAtomic).
 * Example: `await writeFilesAtomic([{ path, data: encodeEdit(edit, path) }])`.
 */
export function encodeEdit(edit: Edit, path: string): Uint8Array {
  const tensors = new Map<string, NamedTensor>();
  const steps: StepMeta[] = edit.steps.map((s, i) => {
    if (s.D.length !== s.rows * edit.d || s.G.length !== s.rows * edit.d)
      throw new EditError(`step ${i}: D/G do not have ${s.rows} × ${edit.d} values`);
    for (const [which, data] of [
      ['D', s.D],
      ['G', s.G],
    ] as const) {
      const badValue = firstBadValue(data);
      if (badValue !== undefined) throw new EditError(`cannot save ${path}: ${describeBad(`step${i}.${which}`, badValue)}`);
    }
    tensors.set(`step${i}.D`, { dtype: 'F32', shape: [s.rows, edit.d], data: s.D });
    tensors.set(`step${i}.G`, { dtype: 'F32', shape: [s.rows, edit.d], data: s.G });
    return {
      pairs: s.pairs,
      preserve: s.preserve,
      lambda: s.lambda,
      augmentations: s.augmentations,
      mode: s.mode,
      ...(s.layers !== undefined ? { layers: s.layers } : {}),
      rows: s.rows,
    };
  });
  return encodeSafetensors({
    tensors,
    metadata: { format: EDIT_FORMAT, d: String(edit.d), fingerprint: edit.fingerprint, steps: JSON.stringify(steps) },
  });
}

function bad(path: string, what: string): never {
  throw new EditError(`${path} is not a valid time-edit file: ${what}`);
}

/** Options of loadEdit. */
export interface LoadEditOptions {
  /**
   * The model's K/V weights, for a kohya LoRA written by `edit --lora` (lora-file.ts): its M is recovered from them
   * (lora-edit.ts). Without it a LoRA is refused with a message saying so.
   */
  weights?: () => KvWeights;
}

/**
 * Reads an edit file, or a kohya LoRA that this tool wrote (given `options.weights`); with `expectFingerprint`,
 * refuses an edit made for another model. A LoRA that touches more than the cross-attention to_k/to_v is refused
 * naming the key. Example: `await loadEdit('out/edit.safetensors', ctx.fingerprint)`.
 */
export async function loadEdit(path: string, expectFingerprint?: string, options: LoadEditOptions = {}): Promise<Edit> {
  if (isLoraFile(path)) {
    const lora = readLoraFile(path);
    if (options.weights === undefined)
      throw new EditError(`${path} is a LoRA: reading it as an edit needs the model's K/V weights (load it for a model)`);
    return loraToEdit(lora, options.weights(), expectFingerprint).edit;
  }
  let content;
  try {
    content = await readSafetensors(path);
  } catch (err) {
    throw new EditError((err as Error).message);
  }
  const md = content.metadata;
  if (md.format !== EDIT_FORMAT) bad(path, `format is ${md.format ?? 'missing'}, expected ${EDIT_FORMAT}`);
  const d = Number(md.d);
  if (!Number.isSafeInteger(d) || d < 1) bad(path, 'bad width d');
  const fingerprint = md.fingerprint;
  if (!fingerprint) bad(path, 'no fingerprint');
  let metas: StepMeta[];
  try {
    metas = JSON.parse(md.steps ?? '') as StepMeta[];
  } catch {
    bad(path, 'corrupt step metadata');
  }
  if (!Array.isArray(metas) || metas.length === 0) bad(path, 'no steps');
  const steps: EditStep[] = metas.map((m, i) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m))
      bad(path, `metadata 'steps' entry ${i} is ${JSON.stringify(m)}, not an object`);
    const D = content.tensors.get(`step${i}.D`);
    const G = content.tensors.get(`step${i}.G`);
    if (!D || !G) bad(path, `step ${i} lacks its D or G tensor`);
    if (!Number.isSafeInteger(m.rows) || m.rows < 1) bad(path, `step ${i} has a bad row count`);
    for (const t of [D, G])
      if (t.shape.length !== 2 || t.shape[0] !== m.rows || t.shape[1] !== d)
        bad(path, `step ${i} tensors are [${t.shape}], expected [${m.rows}, ${d}]`);
    if (m.mode !== 'kv' && m.mode !== 'v' && m.mode !== 'k') bad(path, `step ${i} has mode ${String(m.mode)}`);
    if (
      m.layers !== undefined &&
      !(
        Array.isArray(m.layers) &&
        m.layers.length > 0 &&
        m.layers.every((l, j) => Number.isSafeInteger(l) && l >= 0 && (j === 0 || l > m.layers![j - 1]!))
      )
    )
      bad(path, `step ${i}: layers must be a non-empty ascending list of layer indices`);
    if (!(typeof m.lambda === 'number' && m.lambda > 0)) bad(path, `step ${i} has a bad λ`);
    const isStrings = (x: unknown): boolean => x === undefined || (Array.isArray(x) && x.every((e) => typeof e === 'string'));
    if (!isStrings(m.preserve) || !isStrings(m.augmentations)) bad(path, `step ${i}: preserve and augmentations must be lists of strings`);
    if (
      m.pairs !== undefined &&
      !(
        Array.isArray(m.pairs) &&
        m.pairs.every((p) => typeof p === 'object' && p !== null && typeof p.source === 'string' && typeof p.destination === 'string')
      )
    )
      bad(path, `step ${i}: pairs must be a list of {source, destination} strings`);
    for (const [which, t] of [
      ['D', D],
      ['G', G],
    ] as const) {
      const badValue = firstBadValue(t.data);
      if (badValue !== undefined) bad(path, describeBad(`step${i}.${which}`, badValue));
    }
    return {
      pairs: m.pairs ?? [],
      preserve: m.preserve ?? [],
      lambda: m.lambda,
      augmentations: m.augmentations ?? [],
      mode: m.mode,
      ...(m.layers !== undefined ? { layers: m.layers } : {}),
      rows: m.rows,
      D: D.data,
      G: G.data,
    };
  });
  if (expectFingerprint !== undefined && expectFingerprint !== fingerprint)
    throw new EditError(
      `${path} was made for a different model (fingerprint ${fingerprint}, this model's is ${expectFingerprint}); ` +
        'recompute the edit for this model',
    );
  return { d, steps, fingerprint };
}

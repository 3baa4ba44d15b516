// Prompts → aligned embeddings → solve → Edit. For every edit pair and each of its augmentations, the source
// prompt's 77 embeddings are the rows of C and the destination embeddings at the aligned positions the rows of
// C*; preservation prompts add rows whose target is their own embedding (UCE-style). One solve per step.
import { alignTokens, type AlignTokenizer } from './align.js';
import { augmentPair, DEFAULT_AUGMENTATIONS } from './augment.js';
import { type Edit, EditError, type EditMode, type EditPair, type EditStep } from './edit.js';
import type { EditSolver } from '../solver/select.js';

/** What computing an edit needs from the model: its tokenizer and text encoder. */
export interface PromptEncoder {
  tokenizer: AlignTokenizer;
  /** Embeddings of the prompts (SD padding/truncation), [prompts.length, maxLength, d] row-major. */
  encodePrompts(prompts: string[]): Promise<Float32Array>;
}

export interface EditRequest {
  pairs: EditPair[];
  /** λ > 0; default 0.1 as in the paper. */
  lambda?: number;
  /** Templates; default the paper's three. [] disables augmentation. */
  augmentations?: readonly string[];
  /** 'kv' (default), 'v' (V only) or 'k' (K only). */
  mode?: EditMode;
  /** Cross-attention layers to edit (0-based indices, see lib/model/cross-attention.ts selectLayers); default all. */
  layers?: number[];
  /** Prompts whose embeddings must stay put. */
  preserve?: string[];
}

export interface ComputedEdit {
  edit: Edit;
  /** Human-readable warnings (e.g. truncated prompts). */
  warnings: string[];
  /** C and C* rows that were solved (kept for checks and tests). */
  source: Float32Array;
  destination: Float32Array;
}

/** The prompts one edit needs encoded, and how their embeddings become rows (from planRows). */
export interface RowPlan {
  /** Prompts to encode, in order: source₀, destination₀, source₁, …, then the preservation prompts. */
  texts: string[];
  maps: Int32Array[];
  preserveCount: number;
  warnings: string[];
  lambda: number;
}

/** Checks a request and aligns its prompts (no model call): errors here cost nothing. */
export function planRows(tok: AlignTokenizer, request: EditRequest): RowPlan {
  const lambda = request.lambda ?? 0.1;
  if (typeof lambda !== 'number' || !(Number.isFinite(lambda) && lambda > 0))
    throw new EditError(`λ must be a number > 0, got ${request.lambda}`);
  if (!Array.isArray(request.pairs) || request.pairs.length === 0) throw new EditError('no edit pair given');
  const templates = request.augmentations ?? DEFAULT_AUGMENTATIONS;
  const L = tok.maxLength;
  const warnings: string[] = [];
  const texts: string[] = [];
  const maps: Int32Array[] = [];
  for (const pair of request.pairs) {
    if (
      typeof pair.source !== 'string' ||
      typeof pair.destination !== 'string' ||
      pair.source.trim() === '' ||
      pair.destination.trim() === ''
    )
      throw new EditError('source and destination prompts must not be empty');
    for (const p of augmentPair(pair.source, pair.destination, templates)) {
      const al = alignTokens(tok, p.source, p.destination);
      if (al.truncated.source) warnings.push(`"${p.source}" is longer than ${L - 2} tokens and was truncated, as Stable Diffusion does`);
      if (al.truncated.destination)
        warnings.push(`"${p.destination}" is longer than ${L - 2} tokens and was truncated, as Stable Diffusion does`);
      texts.push(p.source, p.destination);
      maps.push(al.map);
    }
  }
  const preserve = request.preserve ?? [];
  for (const p of preserve) if (typeof p !== 'string' || p.trim() === '') throw new EditError('preservation prompts must not be empty');
  texts.push(...preserve);
  return { texts, maps, preserveCount: preserve.length, warnings, lambda };
}

/** C and C* rows of a plan from the embeddings of its texts ([texts.length, L, d] row-major). */
export function assembleRows(
  plan: RowPlan,
  emb: Float32Array,
  L: number,
): { source: Float32Array; destination: Float32Array; rows: number; d: number } {
  const perPrompt = emb.length / plan.texts.length;
  if (!Number.isInteger(perPrompt) || perPrompt % L !== 0)
    throw new EditError(`text encoder returned ${emb.length} values for ${plan.texts.length} prompts of ${L} tokens`);
  const d = perPrompt / L;
  const pairs = plan.maps.length;
  const rows = (pairs + plan.preserveCount) * L;
  const source = new Float32Array(rows * d);
  const destination = new Float32Array(rows * d);
  plan.maps.forEach((map, k) => {
    const src = emb.subarray(2 * k * perPrompt, (2 * k + 1) * perPrompt);
    const dst = emb.subarray((2 * k + 1) * perPrompt, (2 * k + 2) * perPrompt);
    source.set(src, k * perPrompt);
    for (let i = 0; i < L; i++) destination.set(dst.subarray(map[i]! * d, (map[i]! + 1) * d), k * perPrompt + i * d);
  });
  for (let q = 0; q < plan.preserveCount; q++) {
    const e = emb.subarray((2 * pairs + q) * perPrompt, (2 * pairs + q + 1) * perPrompt);
    source.set(e, (pairs + q) * perPrompt);
    destination.set(e, (pairs + q) * perPrompt);
  }
  return { source, destination, rows, d };
}

/** Builds the rows of one step and the list of warnings, without solving. */
export async function buildRows(
  encoder: PromptEncoder,
  request: EditRequest,
): Promise<{ source: Float32Array; destination: Float32Array; rows: number; d: number; warnings: string[] }> {
  const plan = planRows(encoder.tokenizer, request);
  const emb = await encoder.encodePrompts(plan.texts);
  return { ...assembleRows(plan, emb, encoder.tokenizer.maxLength), warnings: plan.warnings };
}

/** A layer list as a step stores it: ascending, no repeats; refuses an empty list and anything but integers ≥ 0. */
function checkedLayers(layers: number[]): number[] {
  if (!Array.isArray(layers) || layers.length === 0) throw new EditError('the layer list must name at least one cross-attention layer');
  for (const l of layers)
    if (!Number.isSafeInteger(l) || l < 0) throw new EditError(`cross-attention layer indices are integers ≥ 0, got ${String(l)}`);
  return [...new Set(layers)].sort((a, b) => a - b);
}

/** Computes a one-step Edit (several pairs are solved jointly in that step). */
export async function computeEdit(
  encoder: PromptEncoder,
  request: EditRequest,
  solver: EditSolver,
  fingerprint: string,
): Promise<ComputedEdit> {
  const mode = request.mode ?? 'kv';
  if (mode !== 'kv' && mode !== 'v' && mode !== 'k') throw new EditError(`mode must be 'kv', 'v' or 'k', got ${String(mode)}`);
  const layers = request.layers !== undefined ? checkedLayers(request.layers) : undefined;
  const built = await buildRows(encoder, request);
  const lambda = request.lambda ?? 0.1;
  const [lr] = await solver.solve(built.d, [{ source: built.source, destination: built.destination, rows: built.rows, lambda }]);
  const step: EditStep = {
    pairs: request.pairs.map((p) => ({ source: p.source, destination: p.destination })),
    preserve: request.preserve ?? [],
    lambda,
    augmentations: [...(request.augmentations ?? DEFAULT_AUGMENTATIONS)],
    mode,
    ...(layers !== undefined ? { layers } : {}),
    rows: built.rows,
    D: lr!.D,
    G: lr!.G,
  };
  return {
    edit: { d: built.d, steps: [step], fingerprint },
    warnings: built.warnings,
    source: built.source,
    destination: built.destination,
  };
}

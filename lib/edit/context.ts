// Editing a loaded pipeline: the model facts an edit needs (UNet graph, cross-attention layers, fingerprint),
// computing an edit from prompts, and generating with an edit applied in embedding or weights mode.
import { join } from 'node:path';
import { findCrossAttention, type CrossAttentionMap } from '../model/cross-attention.js';
import { loadModel, type LoadedModel, type ModelProto } from '../model/onnx/index.js';
import type { Pipeline } from '../model/pipeline.js';
import type { GenerateOptions } from '../sample/generate.js';
import { editedConditioning, patchUnetWeights, splitConditioningUnet, unetSource, V_INPUT } from './apply.js';
import { computeEdit, type ComputedEdit, type EditRequest, type PromptEncoder } from './compute.js';
import { type Edit, EditError, needsSplitConditioning } from './edit.js';
import { loadEdit } from './edit-file.js';
import { modelFingerprint } from './fingerprint.js';
import { defaultSolver, type EditSolver } from '../solver/select.js';

export type ApplyMode = 'embedding' | 'weights';

export interface EditContext {
  pipeline: Pipeline;
  unet: LoadedModel;
  map: CrossAttentionMap;
  fingerprint: string;
}

/** Reads the pipeline's UNet graph (not its external weights), finds its cross-attention layers, fingerprints it. */
export async function openEditContext(pipeline: Pipeline): Promise<EditContext> {
  const unet = await loadModel(pipeline.unetPath);
  const map = findCrossAttention(unet.model.graph!);
  if (map.d !== pipeline.textWidth)
    throw new EditError(`the UNet's K/V projections take width ${map.d}, the text encoder gives ${pipeline.textWidth}`);
  const fingerprint = await modelFingerprint(join(pipeline.dir, 'text_encoder'), { graph: unet.model.graph!, dir: unet.dir }, map);
  return { pipeline, unet, map, fingerprint };
}

export function promptEncoder(pipeline: Pipeline): PromptEncoder {
  return { tokenizer: pipeline.tokenizer, encodePrompts: (p) => pipeline.encodePrompts(p) };
}

/** Prompts → Edit for this model (native solver when built). */
export async function computeModelEdit(ctx: EditContext, request: EditRequest, solver?: EditSolver): Promise<ComputedEdit> {
  return computeEdit(promptEncoder(ctx.pipeline), request, solver ?? (await defaultSolver()), ctx.fingerprint);
}

/** Loads an edit file and checks it was made for this model. */
export async function loadEditFor(ctx: EditContext, path: string): Promise<Edit> {
  const edit = await loadEdit(path, ctx.fingerprint);
  if (edit.d !== ctx.map.d) throw new EditError(`${path} has width ${edit.d}, this model's text width is ${ctx.map.d}`);
  return edit;
}

/** A pipeline ready to sample with an edit: `options(o)` rewrites generate options to carry the edit. */
export interface EditedGeneration {
  pipeline: Pipeline;
  mode: ApplyMode;
  options(o: GenerateOptions): Promise<GenerateOptions>;
  close(): Promise<void>;
}

/**
 * Prepares sampling with an edit. Embedding mode: the UNet is unchanged (or split once for V-only steps) and the
 * conditioning of every prompt and of the unconditional branch is replaced by E·Mᵀ. Weights mode: a UNet session
 * with the patched K/V weights; options pass through unchanged.
 */
export async function prepareEditedGeneration(
  ctx: EditContext,
  edit: Edit,
  mode: ApplyMode = 'embedding',
  diagnostics: { keepUncond?: boolean } = {},
): Promise<EditedGeneration> {
  // keepUncond (embedding mode only) leaves the unconditional branch unedited: not TIME as published (the edited
  // weights see both branches), a diagnostic for models whose text states are nearly collinear.
  if (diagnostics.keepUncond === true && mode !== 'embedding') throw new EditError('keepUncond needs embedding mode');
  if (edit.fingerprint !== ctx.fingerprint) throw new EditError('this edit was made for a different model');
  let cleanup: (() => void) | undefined;
  let pipeline = ctx.pipeline;
  const useModel = async (model: ModelProto): Promise<void> => {
    const src = await unetSource(model, ctx.unet.dir);
    if ('path' in src) {
      cleanup = src.cleanup;
      try {
        pipeline = await ctx.pipeline.withUnet({ path: src.path });
      } catch (err) {
        src.cleanup();
        throw err;
      }
      // The session has read (or mapped) the files: remove the folder now rather than at close(), so that a run
      // killed while sampling leaves no hidden folder behind (it may be inside the user's model folder). Where
      // open files cannot be removed (Windows), close() does it.
      try {
        src.cleanup();
        cleanup = undefined;
      } catch {
        // keep `cleanup` for close()
      }
    } else
      pipeline = await ctx.pipeline.withUnet(
        src.externalData ? { modelBytes: src.modelBytes, externalData: src.externalData } : { modelBytes: src.modelBytes },
      );
  };
  if (mode === 'weights') await useModel(await patchUnetWeights(ctx.unet, ctx.map, edit));
  else if (needsSplitConditioning(edit)) await useModel(splitConditioningUnet(ctx.unet, ctx.map));
  const owned = pipeline !== ctx.pipeline;
  return {
    pipeline,
    mode,
    async options(o) {
      if (mode === 'weights') return o;
      if (o.conditioning !== undefined) throw new EditError('an edit in embedding mode cannot be combined with a given conditioning');
      const uncondPrompt = o.negativePrompt ?? '';
      const E = await ctx.pipeline.encodePrompts([...o.prompts, uncondPrompt]);
      const per = E.length / (o.prompts.length + 1);
      const cond = editedConditioning(edit, E.subarray(0, o.prompts.length * per));
      const rawUncond = E.subarray(o.prompts.length * per);
      const uncond = diagnostics.keepUncond === true ? splitIdentity(edit, rawUncond) : editedConditioning(edit, rawUncond);
      const { negativePrompt: _unused, ...rest } = o;
      return { ...rest, conditioning: { cond, uncond } };
    },
    async close() {
      if (owned) await pipeline.close();
      cleanup?.();
    },
  };
}

/** The unedited conditioning in the shape editedConditioning gives (the split V input too, when needed). */
function splitIdentity(edit: Edit, E: Float32Array): ReturnType<typeof editedConditioning> {
  const copy = Float32Array.from(E);
  return needsSplitConditioning(edit)
    ? { encoderHiddenStates: copy, extraInputs: { [V_INPUT]: Float32Array.from(E) } }
    : { encoderHiddenStates: copy };
}

/** For `generate --edit FILE [--edit-mode embedding|weights]`: load, check and prepare in one call. */
export async function prepareEditFile(pipeline: Pipeline, editPath: string, mode: ApplyMode = 'embedding'): Promise<EditedGeneration> {
  const ctx = await openEditContext(pipeline);
  return prepareEditedGeneration(ctx, await loadEditFor(ctx, editPath), mode);
}

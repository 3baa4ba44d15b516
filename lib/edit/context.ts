// Editing a loaded pipeline: the model facts an edit needs (UNet graph, cross-attention layers, fingerprint),
// computing an edit from prompts, and generating with an edit applied in embedding or weights mode. A model path
// may also be an SD 1.x checkpoint (a .safetensors file or a diffusers folder, lib/checkpoint/): what it holds is
// detected (detectModelPath), and a checkpoint opens as a CheckpointEditContext, which computes and checks edits
// exactly as an ONNX folder's context does but cannot sample (that needs an ONNX pipeline folder).
// Memory: a context holds no copy of the UNet's weights while images are sampled, in any mode (docs/memory.md).
import { join, resolve } from 'node:path';
import { checkpointAttentionMap, checkpointFingerprint } from '../checkpoint/attention-map.js';
import { detectModelPath, openCheckpoint, type Checkpoint } from '../checkpoint/open-checkpoint.js';
import { CheckpointTextEncoder } from '../checkpoint/text-encoder.js';
import { InputError, ModelError, TimeEditError } from '../errors.js';
import { ClipTokenizer } from '../model/tokenizer.js';
import { loadPipeline, type Device } from '../model/pipeline.js';
import { findCrossAttention, type CrossAttentionMap } from '../model/cross-attention.js';
import { loadModel, type LoadedModel, type ModelProto } from '../model/onnx/index.js';
import type { Pipeline } from '../model/pipeline.js';
import type { GenerateOptions } from '../sample/generate.js';
import {
  conditioningRoutes,
  editedConditioning,
  kvTensorPlaces,
  patchedUnetCopy,
  patchUnetWeights,
  routeConditioningUnet,
  splitConditioningUnet,
  unetSource,
  V_INPUT,
  type ConditioningRoute,
  type KvTensorPlace,
  type UnetSource,
} from './apply.js';
import { UnetGraph, type UnetRead } from './unet-graph.js';
import { computeEdit, type ComputedEdit, type EditRequest, type PromptEncoder } from './compute.js';
import { type Edit, EditError, needsLayerRouting, needsSplitConditioning } from './edit.js';
import { loadEdit } from './edit-file.js';
import { kvWeightsOfCheckpoint, kvWeightsOfOnnx } from './lora-modules.js';
import { modelFingerprint } from './fingerprint.js';
import { defaultSolver, type EditSolver } from '../solver/select.js';

export type ApplyMode = 'embedding' | 'weights';

export interface EditContext {
  pipeline: Pipeline;
  /**
   * The UNet's decoded graph. An ONNX folder's context (openEditContext) does not hold it between uses: it is read
   * from pipeline.unetPath when first asked for and kept until the next prepareEditedGeneration, which stops
   * holding it (its weights would be a second copy beside the UNet session's while sampling, docs/memory.md);
   * asked for again, it is read again. Take it from the context each time rather than keeping it across
   * prepareEditedGeneration. The file must stay the one the context was opened on (else a ModelError).
   */
  readonly unet: LoadedModel;
  map: CrossAttentionMap;
  fingerprint: string;
}

/** An ONNX folder's edit context: the UNet graph read on demand (unet-graph.ts). */
class OnnxEditContext implements EditContext {
  constructor(
    readonly pipeline: Pipeline,
    readonly graph: UnetGraph,
    readonly map: CrossAttentionMap,
    readonly fingerprint: string,
    /** where the K/V weights lie in a self-contained model.onnx (weights mode patches a copy of it in place) */
    readonly kvPlaces: KvTensorPlace[] | undefined,
  ) {}

  get unet(): LoadedModel {
    return this.graph.shared;
  }
}

/**
 * Whether an edit context holds its UNet's graph (and, for a self-contained model.onnx, its weights) in memory
 * now: false after openEditContext and after prepareEditedGeneration, true once `ctx.unet` was read (docs/memory.md).
 * Example: `const ctx = await openEditContext(p); editContextHoldsUnet(ctx)` → false; `ctx.unet; editContextHoldsUnet(ctx)` → true.
 */
export function editContextHoldsUnet(ctx: EditContext): boolean {
  return ctx instanceof OnnxEditContext ? ctx.graph.held : true;
}

/**
 * Reads the pipeline's UNet graph (not its external weights), finds its cross-attention layers, fingerprints it,
 * and frees what it read: `ctx.unet` reads it again when asked for (EditContext.unet).
 * Example: `const ctx = await openEditContext(await loadPipeline()); ctx.map.layers.length` → 16 for an SD 1.x UNet.
 */
export async function openEditContext(pipeline: Pipeline): Promise<EditContext> {
  const unet = await loadModel(pipeline.unetPath);
  const graph = UnetGraph.adopt(unet);
  try {
    const map = findCrossAttention(unet.model.graph!);
    if (map.d !== pipeline.textWidth)
      throw new EditError(`the UNet's K/V projections take width ${map.d}, the text encoder gives ${pipeline.textWidth}`);
    const fingerprint = await modelFingerprint(join(pipeline.dir, 'text_encoder'), { graph: unet.model.graph!, dir: unet.dir }, map);
    return new OnnxEditContext(pipeline, graph, map, fingerprint, kvTensorPlaces(unet, map));
  } finally {
    // Nothing outside this function has seen this read: its memory goes now (the map and fingerprint hold no tensor).
    graph.drop(true);
  }
}

/** The UNet graph to rewrite for a session, and how to free it once the rewritten model is written out. */
async function unetToRewrite(ctx: EditContext): Promise<UnetRead> {
  if (!(ctx instanceof OnnxEditContext)) return { unet: ctx.unet, release: () => undefined };
  const read = await ctx.graph.read();
  ctx.graph.drop();
  return read;
}

export function promptEncoder(pipeline: PromptEncoder): PromptEncoder {
  return { tokenizer: pipeline.tokenizer, encodePrompts: (p) => pipeline.encodePrompts(p) };
}

/** Prompts → Edit for this model (native solver when built): an ONNX folder's or a checkpoint's. */
export async function computeModelEdit(ctx: AnyEditContext, request: EditRequest, solver?: EditSolver): Promise<ComputedEdit> {
  return computeEdit(promptEncoder(ctx.pipeline), request, solver ?? (await defaultSolver()), ctx.fingerprint);
}

/** Loads an edit file and checks it was made for this model (an ONNX folder's or a checkpoint's). */
export async function loadEditFor(ctx: AnyEditContext, path: string): Promise<Edit> {
  // A kohya LoRA written by `edit --lora` loads too: its M is recovered from this model's K/V weights.
  const weights = () => (isCheckpointContext(ctx) ? kvWeightsOfCheckpoint(ctx.checkpoint) : kvWeightsOfOnnx(ctx.unet, ctx.map));
  const edit = await loadEdit(path, ctx.fingerprint, { weights });
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
 * with the patched K/V weights; options pass through unchanged. Whenever a UNet copy is made (weights mode, or
 * a split or routed graph), the folder UNet's session is released first and the copy's graph is freed before its
 * session is created, so one copy of the UNet's weights is in memory at a time; afterwards the context holds no
 * UNet graph (EditContext.unet reads it again when asked for).
 * Example: `const g = await prepareEditedGeneration(ctx, edit, 'weights'); await generate(g.pipeline, await g.options(o)); await g.close()`.
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
  // A rewritten graph for the session: read, rewritten, written out (a temp file onnxruntime reads) and freed
  // before the session is created.
  const rewritten = (rewrite: (unet: LoadedModel) => ModelProto | Promise<ModelProto>) => async (): Promise<UnetSource> => {
    const read = await unetToRewrite(ctx);
    try {
      return await unetSource(await rewrite(read.unet), read.unet.dir);
    } finally {
      read.release();
    }
  };
  const useSource = async (make: () => Promise<UnetSource>): Promise<void> => {
    // One copy of the UNet's weights at a time (docs/memory.md): the folder UNet's session (its weights and its
    // buffers) is released first, and created again when the folder pipeline next samples.
    await ctx.pipeline.releaseUnet();
    const src = await make();
    if ('path' in src) {
      cleanup = src.cleanup;
      try {
        pipeline = await ctx.pipeline.withUnet({ path: src.path }, { temporaryPath: true });
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
        { transferBytes: true },
      );
  };
  // Layer subsets in embedding mode: each group of projections edited by the same steps reads its own input.
  const routes: ConditioningRoute[] | undefined =
    mode === 'embedding' && needsLayerRouting(edit) ? conditioningRoutes(edit, ctx.map) : undefined;
  if (mode === 'weights') {
    // A self-contained model.onnx: a copy of the file patched in place, so the model is never read into memory.
    // Where the temp file cannot be written (no space, no temp folder), the patched graph is made in memory.
    const places = ctx instanceof OnnxEditContext ? ctx.kvPlaces : undefined;
    const inMemory = rewritten((unet) => patchUnetWeights(unet, ctx.map, edit));
    await useSource(
      places !== undefined && ctx instanceof OnnxEditContext
        ? () =>
            patchedUnetCopy(ctx.graph.path, places, ctx.map, edit, { check: () => ctx.graph.verify() }).catch((err: unknown) => {
              if (err instanceof TimeEditError) throw err;
              return inMemory();
            })
        : inMemory,
    );
  } else if (routes !== undefined) await useSource(rewritten((unet) => routeConditioningUnet(unet, ctx.map, routes)));
  else if (needsSplitConditioning(edit)) await useSource(rewritten((unet) => splitConditioningUnet(unet, ctx.map)));
  // The folder UNet's graph is not needed to sample: a copy a caller asked for (ctx.unet) is not held any longer.
  if (ctx instanceof OnnxEditContext) ctx.graph.drop();
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
      const cond = editedConditioning(edit, E.subarray(0, o.prompts.length * per), routes);
      const rawUncond = E.subarray(o.prompts.length * per);
      const uncond = diagnostics.keepUncond === true ? splitIdentity(edit, rawUncond, routes) : editedConditioning(edit, rawUncond, routes);
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
function splitIdentity(edit: Edit, E: Float32Array, routes?: ConditioningRoute[]): ReturnType<typeof editedConditioning> {
  const copy = Float32Array.from(E);
  if (routes !== undefined)
    return { encoderHiddenStates: copy, extraInputs: Object.fromEntries(routes.map((r) => [r.input, Float32Array.from(E)])) };
  return needsSplitConditioning(edit)
    ? { encoderHiddenStates: copy, extraInputs: { [V_INPUT]: Float32Array.from(E) } }
    : { encoderHiddenStates: copy };
}

/** For `generate --edit FILE [--edit-mode embedding|weights]`: load, check and prepare in one call. */
export async function prepareEditFile(pipeline: Pipeline, editPath: string, mode: ApplyMode = 'embedding'): Promise<EditedGeneration> {
  const ctx = await openEditContext(pipeline);
  return prepareEditedGeneration(ctx, await loadEditFor(ctx, editPath), mode);
}

/** A tokenizer and a text encoder: what a checkpoint context offers where an ONNX context has a whole Pipeline. */
export interface TextPipeline extends PromptEncoder {
  readonly tokenizer: ClipTokenizer;
  /** the text encoder's width d */
  readonly textWidth: number;
  close(): Promise<void>;
}

/** Where the time of opening a checkpoint went, in milliseconds. */
export interface CheckpointTimings {
  /** reading the headers and checking the layout */
  headerMs: number;
  /** reading the text encoder's tensors (written as fp32 for onnxruntime) */
  textReadMs: number;
  /** creating the text encoder's onnxruntime session */
  textLoadMs: number;
  /** reading the 32 K/V weights (for the fingerprint) */
  kvReadMs: number;
}

/**
 * An SD 1.x checkpoint opened for editing: its tokenizer and text encoder (`pipeline`), its 16 cross-attention
 * layers as a CrossAttentionMap (names are the ONNX export's scopes; `initializer` is the tensor's key, shape
 * [C, d]) and its fingerprint. Edits are computed and checked with it as with an EditContext; it cannot sample.
 */
export interface CheckpointEditContext {
  kind: 'single-file' | 'diffusers';
  checkpoint: Checkpoint;
  pipeline: TextPipeline;
  map: CrossAttentionMap;
  fingerprint: string;
  timings: CheckpointTimings;
}

/** An edit context of any model kind. */
export type AnyEditContext = EditContext | CheckpointEditContext;

/** Whether a context is a checkpoint's (which cannot sample). Example: `if (isCheckpointContext(ctx)) …`. */
export function isCheckpointContext(ctx: AnyEditContext): ctx is CheckpointEditContext {
  return 'checkpoint' in ctx;
}

export interface CheckpointContextOptions {
  device?: Device;
  threads?: number;
  /**
   * The tokenizer folder (vocab.json + merges.txt, or tokenizer.json). Required for a single file, which holds
   * none; a diffusers folder's own tokenizer/ is the default for a folder.
   */
  tokenizer?: string;
  /** the text encoder's attention heads when neither config.json nor CLIP's rule (width / 64) gives them */
  textHeads?: number;
}

/** The CLIP tokenizer a checkpoint is used with, checked against its text encoder's vocabulary and length. */
async function checkpointTokenizer(ckpt: Checkpoint, dir: string | undefined): Promise<ClipTokenizer> {
  const folder = dir ?? ckpt.tokenizerDir;
  if (folder === undefined)
    throw new InputError(
      'tokenizer',
      `tokenizer must name a tokenizer folder: ${ckpt.path} is a single-file checkpoint, which holds no tokenizer (SD 1.x uses openai/clip-vit-large-patch14's vocab.json + merges.txt, as in any SD 1.x diffusers folder's tokenizer/)`,
    );
  const tok = await ClipTokenizer.fromFolder(folder);
  const cfg = ckpt.textEncoder.config;
  if (Math.max(tok.bos, tok.eos) >= cfg.vocabSize)
    throw new ModelError(
      folder,
      `the tokenizer ${folder} has ids up to ${Math.max(tok.bos, tok.eos)}, the text encoder of ${ckpt.path} only ${cfg.vocabSize}: not this model's tokenizer`,
    );
  if (tok.maxLength !== cfg.positions)
    throw new ModelError(
      folder,
      `the tokenizer ${folder} makes ${tok.maxLength} tokens, the text encoder of ${ckpt.path} takes ${cfg.positions}`,
    );
  return tok;
}

/**
 * Opens an SD 1.x checkpoint (a .safetensors file or a diffusers folder) for editing: reads the headers, the text
 * encoder's tensors (into an onnxruntime session, lib/checkpoint/text-encoder.ts) and the 32 K/V weights (for the
 * fingerprint), by offset; nothing else of the file is read. Close it with `ctx.pipeline.close()`.
 * Example: `const ctx = await openCheckpointEditContext('sd15.safetensors', { tokenizer: 'clip-tokenizer' }); await computeModelEdit(ctx, { pairs })`.
 */
export async function openCheckpointEditContext(path: string, options: CheckpointContextOptions = {}): Promise<CheckpointEditContext> {
  const t0 = performance.now();
  const checkpoint = openCheckpoint(path, options.textHeads !== undefined ? { textHeads: options.textHeads } : {});
  const tokenizer = await checkpointTokenizer(checkpoint, options.tokenizer);
  const headerMs = performance.now() - t0;
  const encoder = await CheckpointTextEncoder.open(checkpoint, {
    ...(options.device !== undefined ? { device: options.device } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
  });
  try {
    const t1 = performance.now();
    const fingerprint = checkpointFingerprint(checkpoint, encoder.weightsSha256);
    const kvReadMs = performance.now() - t1;
    const L = tokenizer.maxLength;
    const pipeline: TextPipeline = {
      tokenizer,
      textWidth: encoder.config.width,
      async encodePrompts(prompts: string[]): Promise<Float32Array> {
        if (!Array.isArray(prompts) || prompts.length === 0) throw new InputError('prompts', 'no prompts to encode', { received: prompts });
        const ids = new Int32Array(prompts.length * L);
        prompts.forEach((p, k) => {
          if (typeof p !== 'string') throw new InputError('prompts', `prompt ${k} is not a string`, { received: p });
          ids.set(tokenizer.encode(p).ids, k * L);
        });
        return encoder.encode(ids, prompts.length);
      },
      close: () => encoder.close(),
    };
    return {
      kind: checkpoint.kind,
      checkpoint,
      pipeline,
      map: checkpointAttentionMap(checkpoint),
      fingerprint,
      timings: { headerMs, textReadMs: encoder.timings.readMs, textLoadMs: encoder.timings.loadMs, kvReadMs },
    };
  } catch (err) {
    await encoder.close();
    throw err;
  }
}

/** An opened model of any kind and how to close it. */
export interface OpenedModel {
  ctx: AnyEditContext;
  close(): Promise<void>;
}

/**
 * Opens what `model` holds for editing: an ONNX pipeline folder (default: the embedded model) as today, or an SD 1.x
 * checkpoint (a .safetensors file, a diffusers folder). Example:
 * `const m = await openModelForEdit('sd15.safetensors', { tokenizer: 'clip-tokenizer' }); try { await computeModelEdit(m.ctx, req) } finally { await m.close() }`.
 */
export async function openModelForEdit(model: string | undefined, options: CheckpointContextOptions = {}): Promise<OpenedModel> {
  if (model !== undefined && detectModelPath(resolve(model)) !== 'onnx-folder') {
    const ctx = await openCheckpointEditContext(resolve(model), options);
    return { ctx, close: () => ctx.pipeline.close() };
  }
  if (options.tokenizer !== undefined)
    throw new InputError('tokenizer', 'tokenizer is for checkpoints only: an ONNX pipeline folder uses its own tokenizer/', {
      received: options.tokenizer,
    });
  const pipeline = await loadPipeline(model, {
    ...(options.device !== undefined ? { device: options.device } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
  });
  try {
    return { ctx: await openEditContext(pipeline), close: () => pipeline.close() };
  } catch (err) {
    await pipeline.close();
    throw err;
  }
}

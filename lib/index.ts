// The public API of time-edit: a plain list of re-exports, one block per module.
export {
  solveEdits,
  patchWeights,
  applyToEmbeddings,
  composeEdits,
  denseOf,
  solverBackend,
  availableBackends,
  solverThreads,
  setSolverThreads,
  addonPath,
  backendFor,
} from './solver/native.js';
export type {
  BackendKind,
  BackendChoice,
  EditInput,
  StackedWeights,
  LowRankForm,
  EditTransform,
  SolvedEdit,
  SolveOptions,
  OutputOptions,
} from './solver/native.js';

// Sampling: tokenizer, pipeline folders, schedulers, seeded noise, generation, PNG output.
export { ClipTokenizer } from './model/tokenizer.js';
export type { Encoded } from './model/tokenizer.js';
export { loadPipeline, Pipeline, defaultModelDir } from './model/pipeline.js';
export type { PipelineOptions, ModelSource, TimestepInput, Device, HostStats, ValueInfo } from './model/pipeline.js';
export { generate, validateGenerateOptions } from './sample/generate.js';
export type { GenerateOptions, GeneratedImage, UnetConditioning } from './sample/generate.js';
export { createScheduler, alphasCumprod, parseSchedulerName, schedulerNames } from './sample/schedulers.js';
export type { Scheduler, SchedulerConfig, SchedulerName } from './sample/schedulers.js';
export { gaussianNoise, philox4x32 } from './sample/noise.js';
export { parseSeeds } from './cli/sampling-flags.js';
export { encodePng, decodePng, readPngText, writePng, writeFileAtomic } from './image/png.js';
export type { RgbImage } from './image/png.js';
export { makeGrid } from './image/grid.js';

// TIME editing: prompts -> aligned embeddings -> solve -> Edit, and its application modes.
export { openEditContext, computeModelEdit, prepareEditedGeneration, prepareEditFile } from './edit/context.js';
export type { EditContext, ApplyMode, EditedGeneration } from './edit/context.js';
export { computeEdit, buildRows } from './edit/compute.js';
export type { EditRequest, PromptEncoder, ComputedEdit } from './edit/compute.js';
export { composeEdits as composeEditValues, transformRows, transformWeightRows, denseMatrix, EditError } from './edit/edit.js';
export type { Edit, EditStep, EditMode, EditPair } from './edit/edit.js';
export { saveEdit, loadEdit } from './edit/edit-file.js';
export { alignTokens, AlignmentError } from './edit/align.js';
export { augmentPair, augmentPrompt, DEFAULT_AUGMENTATIONS } from './edit/augment.js';
export { editedConditioning, patchedUnet, patchedUnetFast, splitConditioningUnet, exportEditedPipeline, V_INPUT } from './edit/apply.js';
export { findCrossAttention, describeCrossAttention, CrossAttentionError } from './model/cross-attention.js';
export type { CrossAttentionMap, CrossAttentionLayer, Projection } from './model/cross-attention.js';

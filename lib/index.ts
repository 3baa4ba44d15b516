// The public API of time-edit (the package root, `import … from 'time-edit'`): the task-level calls, one block
// per task, as plain re-exports. Lower-level pieces have their own entry points in package.json "exports"
// (time-edit/onnx, time-edit/cross-attention, time-edit/eval, time-edit/checkpoint); everything else in lib/ is internal.

// Loading a pipeline folder, and its tokenizer.
export { loadPipeline, Pipeline, defaultModelDir } from './model/pipeline.js';
export type { PipelineOptions, ModelSource, TimestepInput, Device, HostStats, ValueInfo, FolderModel } from './model/pipeline.js';
export { ClipTokenizer } from './model/tokenizer.js';
export type { Encoded } from './model/tokenizer.js';

// Generating images, and writing them as PNG.
export { generate, validateGenerateOptions } from './sample/generate.js';
export type { GenerateOptions, GeneratedImage, UnetConditioning } from './sample/generate.js';
// Fitting a run in memory: the plan (images per UNet call, attention slices), its refusal, the query-sliced attention.
export { planGenerateMemory, applyMemoryPlan, MemoryBudgetError } from './sample/generate.js';
export { planMemory, estimatePeak, defaultMemoryBudget } from './sample/memory-plan.js';
export type { MemoryPlan, MemoryPlanInput, MemoryBreakdown } from './sample/memory-plan.js';
export { sliceAttention, findAttentionSites } from './model/attention-slicing.js';
export type { AttentionSite, SlicingReport, SlicedAttention } from './model/attention-slicing.js';
export { schedulerNames } from './sample/schedulers.js';
export type { SchedulerName } from './sample/schedulers.js';
export { encodePng, decodePng, readPngText, writePng } from './image/png.js';
export type { RgbImage } from './image/png.js';
export { makeGrid } from './image/grid.js';

// TIME edits: computing one from prompts, saving and loading it, chaining two, applying one.
export { openEditContext, computeModelEdit, prepareEditedGeneration, prepareEditFile } from './edit/context.js';
export type { EditContext, ApplyMode, EditedGeneration } from './edit/context.js';
// SD 1.x checkpoints (a .safetensors file, a diffusers folder) as models to edit; lower level: time-edit/checkpoint.
export { openCheckpointEditContext, openModelForEdit, isCheckpointContext } from './edit/context.js';
export type {
  CheckpointEditContext,
  AnyEditContext,
  CheckpointContextOptions,
  CheckpointTimings,
  OpenedModel,
  TextPipeline,
} from './edit/context.js';
export { openCheckpoint, detectModelPath } from './checkpoint/open-checkpoint.js';
export type { Checkpoint, CheckpointKind, OpenCheckpointOptions } from './checkpoint/open-checkpoint.js';
export { CheckpointTextEncoder } from './checkpoint/text-encoder.js';
export { computeEdit } from './edit/compute.js';
export type { EditRequest, PromptEncoder, ComputedEdit } from './edit/compute.js';
export type { EditSolver, SolveItem, LowRank } from './solver/select.js';
export { DEFAULT_AUGMENTATIONS } from './edit/augment.js';
export { chainEdits } from './edit/edit.js';
export type { Edit, EditStep, EditMode, EditPair } from './edit/edit.js';
export { saveEdit, loadEdit } from './edit/edit-file.js';
export { patchUnetWeights, exportEditedPipeline } from './edit/apply.js';
export type { PatchOptions, ExportOptions } from './edit/apply.js';
// Delivering an edit where SD users load it: a kohya LoRA (and reading one back), a merged checkpoint, a diffusers folder.
export { factorEdit, truncationErrors, LORA_TRUNCATIONS } from './edit/lora-factor.js';
export type { KvWeights, KvLayerWeights, LoraFactors, LoraModule, LoraTruncation, TruncationError } from './edit/lora-factor.js';
export { kvWeightsOfOnnx, kvWeightsOfCheckpoint } from './edit/lora-modules.js';
export { encodeLora, saveLora, readLoraFile, isLoraFile, loraMetadata, LORA_FORMAT } from './edit/lora-file.js';
export type { LoraDescription, LoraFile, LoraFileModule } from './edit/lora-file.js';
export { loraToEdit } from './edit/lora-edit.js';
export type { RecoveredEdit } from './edit/lora-edit.js';
export { writeMergedCheckpoint, rewriteSafetensors } from './edit/merged-checkpoint.js';
export { writeEditedDiffusersFolder } from './edit/diffusers-folder.js';
export type { CrossAttentionMap, CrossAttentionLayer, Projection } from './model/cross-attention.js';

// The native solver: the closed-form solve and what to do with its result, and the backend it runs on.
export { solveEdits, patchWeights, applyToEmbeddings, composeTransforms, denseOf } from './solver/native.js';
export type {
  EditInput,
  StackedWeights,
  LowRankForm,
  EditTransform,
  SolvedEdit,
  SolveOptions,
  SolveOutputs,
  OutputOptions,
} from './solver/native.js';
export { availableBackends, solverBackend, solverThreads, setSolverThreads } from './solver/backend.js';
export type { BackendKind, BackendChoice } from './solver/backend.js';

// The errors the library throws on purpose.
export { TimeEditError, InputError, ModelError, OutputInUseError, BackendUnavailableError } from './errors.js';
export type { OutputHolder } from './errors.js';
export { EditError } from './edit/edit.js';
export { AlignmentError } from './edit/align.js';
export { SafetensorsError } from './edit/safetensors.js';
export { CrossAttentionError } from './model/cross-attention.js';
export { CheckpointError } from './checkpoint/checkpoint-error.js';
export { OnnxError, ProtobufError } from './model/onnx/index.js';
export { FileError } from './fs/file-error.js';

// Scaling out on a Redis queue (BullMQ): workers that serve models, and edit batches, images and TIMED runs computed
// by them with the same output as the local calls (docs/queue.md).
export {
  startQueueWorker,
  runBatchOnQueue,
  generateOnQueue,
  runTimedOnQueue,
  queueStatus,
  cleanQueues,
  checkConnection,
  redactUrl,
  resolveQueueUrl,
  validateJob,
  QueueError,
  PayloadError,
} from './queue/index.js';
export type {
  QueueWorker,
  QueueWorkerOptions,
  WorkerInfo,
  QueuedImages,
  QueueStatus,
  QueueCounts,
  QueueTarget,
  JobData,
} from './queue/index.js';

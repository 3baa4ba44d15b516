// A Stable Diffusion 1.x ONNX pipeline folder (diffusers or optimum layout, fp32 or fp16, int32/int64 ids,
// int64/float timesteps of rank 0, 1 or batch) or the embedded toy model, loaded into an onnxruntime worker.
// Every dtype and shape decision is read from the session metadata (onnxruntime's inputMetadata/outputMetadata),
// never assumed. A folder, config or graph that cannot be used is a ModelError naming the file; a bad option or
// argument is an InputError naming it.
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError, invalidInput, ModelError, TimeEditError } from '../errors.js';
import { FileError } from '../fs/file-error.js';
import { isDirectory as isDir, isFile, readJsonObject } from '../fs/json-file.js';
import {
  readModelIndex,
  readUnetConfig,
  readVaeConfig,
  SCHEDULER_CONFIG_FILE,
  validateSchedulerConfig,
  type SchedulerConfig,
} from './configs.js';
import { graphInterface } from './graph-interface.js';
import { MAX_ATTENTION_SLICES, type SlicedAttention, type SlicingReport } from './attention-slicing.js';
import { slicedUnetSource } from './sliced-unet-source.js';
import { defaultModelDir } from './paths.js';
import { SessionHost, type HostStats } from './session-host.js';
import { ClipTokenizer } from './tokenizer.js';
import type { Device, Feed, ModelSource, SessionConfig, SessionInfo, ValueInfo } from './worker-protocol.js';

export type { Device, Feed, ModelSource, ValueInfo } from './worker-protocol.js';
export type { HostStats } from './session-host.js';

export { defaultModelDir };

/**
 * The most onnxruntime threads a session may be given: far above any machine's useful count, low enough that a typo
 * (threads: 1e6) is refused instead of exhausting the process's thread limit.
 */
export const MAX_THREADS = 1024;

export interface PipelineOptions {
  /** execution provider: 'cpu' (default) or 'cuda' (needs onnxruntime-node's CUDA libraries) */
  device?: Device;
  /** onnxruntime intra-op threads per session, 1…MAX_THREADS (default: onnxruntime's choice, one per core) */
  threads?: number;
  /** let idle intra-op threads spin (onnxruntime's default; off here, see README, "Threads and devices") */
  spinning?: boolean;
  /**
   * keep onnxruntime's CPU memory arena and memory-pattern plan (default true, onnxruntime's default): faster
   * repeated runs, but a session keeps its largest run's buffers until it is released (docs/memory.md)
   */
  arena?: boolean;
}

/** How the UNet's timestep input wants its value. */
export interface TimestepInput {
  type: 'float32' | 'float16' | 'int64' | 'int32';
  /** 'scalar' = shape [], 'one' = shape [1] broadcast over the batch, 'batch' = one value per batch row */
  form: 'scalar' | 'one' | 'batch';
}

/** The folder's three models, in the order their sessions were created before they were created on first use. */
export type FolderModel = 'text_encoder' | 'unet' | 'vae_decoder';

/**
 * One of the folder's sessions. It is created the first time it is run, unless its graph could not tell its
 * inputs and outputs (lib/model/graph-interface.ts), in which case it was created at load to ask onnxruntime.
 */
interface FolderSession {
  model: FolderModel;
  key: string;
  path: string;
  ready: Promise<void> | null;
}

interface UnetInfo {
  path: string;
  key: string;
  /** the attention slicing this UNet's session was created with (null: not created yet) */
  slicing: SlicingReport | null;
  /** the folder's own UNet, created on first use; undefined for a withUnet() copy (created by withUnet) */
  session?: FolderSession;
  outputName: string;
  timestep: TimestepInput;
  /** inputs beyond sample/timestep/encoder_hidden_states (e.g. an edit's separate V conditioning) */
  extraInputs: ValueInfo[];
}

interface Shared {
  dir: string;
  host: SessionHost;
  device: Device;
  threads: number | undefined;
  spinning: boolean;
  sessionConfig: SessionConfig;
  /** query slices for the self-attention of UNet sessions created from now on */
  attentionSlices: number;
  slicedAttention: SlicedAttention;
  /** bytes of the UNet's weights (unet/model.onnx and its external data files) */
  unetWeightBytes: number;
  /** bytes of the text encoder's and the VAE decoder's folders */
  otherModelBytes: number;
  /** attention heads of the UNet's transformer blocks (unet/config.json attention_head_dim, largest; 8 if absent) */
  attentionHeads: number;
  /** channels of the UNet's and of the VAE decoder's first level (block_out_channels[0]; SD 1.x's 320, 128 if absent) */
  unetBaseChannels: number;
  vaeBaseChannels: number;
  /** the folder models whose session exists, in creation order */
  created: FolderModel[];
  tokenizer: ClipTokenizer;
  text: FolderSession;
  textInfo: SessionInfo;
  textOutput: string;
  vae: FolderSession;
  vaeOutput: string;
  vaeBatch: number | null;
  textWidth: number;
  latentChannels: number;
  schedulerConfig: SchedulerConfig;
  vaeScalingFactor: number;
  vaeScaleFactor: number;
  sizeMultiple: number;
  defaultSize: number;
}

const UNET_INPUTS = ['sample', 'timestep', 'encoder_hidden_states'];
// Operators of onnxruntime's transformer optimizer (model_type "unet"): their presence means packed K/V
// ("GPU-optimized" exports) whose per-layer projections are gone and which do not run on CPU.
const PACKED_MARKERS = ['MultiHeadAttention', 'BiasSplitGelu', 'PackedAttention', 'MatMul_KV'];

/** A config of the model folder; one that cannot be read or is not a JSON object is a ModelError naming it. */
async function readJsonFile(path: string): Promise<Record<string, unknown>> {
  try {
    return await readJsonObject(path);
  } catch (err) {
    throw err instanceof FileError ? new ModelError(err.path, err.message, { cause: err }) : err;
  }
}

/**
 * What is wrong with `rel` (a path inside the pipeline folder `root`) that should be a file or a folder: null when
 * nothing, 'missing' when it does not exist, else a phrase saying what it is instead ("is a folder, not a file",
 * "cannot be read: EACCES …", "cannot be reached: text_encoder is a file, not a folder").
 */
async function entryProblem(root: string, rel: string, kind: 'file' | 'folder'): Promise<string | null> {
  try {
    const s = await stat(join(root, rel));
    if (kind === 'file' ? s.isFile() : s.isDirectory()) return null;
    return s.isDirectory() ? 'is a folder, not a file' : kind === 'folder' ? 'is a file, not a folder' : 'is not a regular file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    if (code === 'ENOTDIR') {
      // Some folder on the way is a file: name the first one.
      const parts = rel.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (!(await isDir(join(root, dir)))) return `cannot be reached: ${dir} is a file, not a folder`;
      }
    }
    return `cannot be read: ${(err as Error).message}`;
  }
}

async function optionalJson(path: string): Promise<Record<string, unknown>> {
  return (await isFile(path)) ? readJsonFile(path) : {};
}

/** Scans model bytes (streamed from a file or in memory) for the optimizer's packed-attention operators. */
async function findPackedMarker(source: { path: string } | { bytes: Uint8Array }): Promise<string | null> {
  const needles = PACKED_MARKERS.map((m) => Buffer.from(m, 'latin1'));
  const overlap = Math.max(...needles.map((n) => n.length));
  if ('bytes' in source) {
    const b = Buffer.from(source.bytes.buffer, source.bytes.byteOffset, source.bytes.byteLength);
    return PACKED_MARKERS.find((_, i) => b.includes(needles[i]!)) ?? null;
  }
  const fh = await open(source.path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 22);
    let carry = Buffer.alloc(0);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) return null;
      pos += bytesRead;
      const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
      const hit = PACKED_MARKERS.find((_, i) => window.includes(needles[i]!));
      if (hit !== undefined) return hit;
      carry = window.subarray(Math.max(0, window.length - overlap));
    }
  } finally {
    await fh.close();
  }
}

function isFloat(type: string): boolean {
  return type === 'float32' || type === 'float16';
}

function fmtInputs(info: SessionInfo): string {
  return info.inputs.map((i) => `${i.name} (${i.type} [${i.shape.join(',')}])`).join(', ');
}

function lastDim(v: ValueInfo | undefined): number | null {
  const d = v?.shape[v.shape.length - 1];
  return typeof d === 'number' && d > 0 ? d : null;
}

/** The text encoder's hidden-state output: last_hidden_state, else its first output. */
function textOutputOf(info: SessionInfo): ValueInfo | undefined {
  return info.outputs.find((o) => o.name === 'last_hidden_state') ?? info.outputs[0];
}

function checkUnet(info: SessionInfo, label: string, allowExtra: boolean): Omit<UnetInfo, 'path' | 'key' | 'slicing'> {
  const byName = new Map(info.inputs.map((i) => [i.name, i]));
  const missing = UNET_INPUTS.filter((n) => !byName.has(n));
  if (missing.length > 0)
    throw new ModelError(label, `${label}: missing input(s) ${missing.join(', ')}; it has ${fmtInputs(info)} (not an SD 1.x UNet)`);
  const extra = info.inputs.filter((i) => !UNET_INPUTS.includes(i.name));
  if (extra.length > 0 && !allowExtra) {
    throw new ModelError(
      label,
      `${label}: unexpected input(s) ${extra.map((i) => i.name).join(', ')} (an SD 1.x UNet takes only ${UNET_INPUTS.join(', ')}; SDXL and ControlNet UNets are not supported)`,
    );
  }
  for (const e of extra)
    if (!isFloat(e.type))
      throw new ModelError(label, `${label}: extra input ${e.name} has type ${e.type}; only float inputs can be fed as conditioning`);
  for (const n of ['sample', 'encoder_hidden_states']) {
    const t = byName.get(n)!.type;
    if (!isFloat(t)) throw new ModelError(label, `${label}: input ${n} has type ${t}, expected float32 or float16`);
  }
  const ts = byName.get('timestep')!;
  if (!['float32', 'float16', 'int64', 'int32'].includes(ts.type))
    throw new ModelError(label, `${label}: input timestep has type ${ts.type}, expected int64, float32 or float16`);
  if (ts.shape.length > 1) throw new ModelError(label, `${label}: input timestep has rank ${ts.shape.length}, expected 0 or 1`);
  const form = ts.shape.length === 0 ? 'scalar' : ts.shape[0] === 1 ? 'one' : 'batch';
  const outputName = info.outputs.find((o) => o.name === 'out_sample')?.name ?? info.outputs[0]?.name;
  if (outputName === undefined) throw new ModelError(label, `${label}: the model has no outputs`);
  return { outputName, timestep: { type: ts.type as TimestepInput['type'], form }, extraInputs: extra };
}

/** One UNet's worth of conditioning: a [B|1, 77, d] text state, plus any extra float inputs the UNet declares. */
export interface UnetFeeds {
  sample: Float32Array;
  /** [batch, channels, h, w] of `sample` */
  dims: [number, number, number, number];
  timestep: number;
  encoderHiddenStates: Feed;
  extraInputs?: Record<string, Feed>;
  /** hand `sample`'s buffer to the worker instead of copying it (the array is unusable afterwards) */
  transferSample?: boolean;
}

export class Pipeline {
  private constructor(
    private readonly shared: Shared,
    private readonly unet: UnetInfo,
    private readonly ownsHost: boolean,
  ) {}

  /** the pipeline folder */
  get dir(): string {
    return this.shared.dir;
  }
  get tokenizer(): ClipTokenizer {
    return this.shared.tokenizer;
  }
  /** d of the text encoder's last_hidden_state [B, 77, d] (768 for SD 1.x) */
  get textWidth(): number {
    return this.shared.textWidth;
  }
  /** tokens per prompt (77) */
  get sequenceLength(): number {
    return this.shared.tokenizer.maxLength;
  }
  /** scheduler/scheduler_config.json */
  get schedulerConfig(): SchedulerConfig {
    return this.shared.schedulerConfig;
  }
  /** latents are divided by this before decoding (vae scaling_factor, 0.18215 for SD 1.x) */
  get vaeScalingFactor(): number {
    return this.shared.vaeScalingFactor;
  }
  /** image pixels per latent pixel (8 for SD 1.x, 4 for the toy model) */
  get vaeScaleFactor(): number {
    return this.shared.vaeScaleFactor;
  }
  get latentChannels(): number {
    return this.shared.latentChannels;
  }
  /**
   * image sides must be multiples of this: the VAE factor × 2^(UNet downsamplings) when unet/config.json lists
   * block_out_channels (64 for SD 1.x, 32 for toy-shapes), else the VAE factor
   */
  get sizeMultiple(): number {
    return this.shared.sizeMultiple;
  }
  /** default image side in pixels (unet/config.json sample_size × vaeScaleFactor; 512 for SD 1.x) */
  get defaultSize(): number {
    return this.shared.defaultSize;
  }
  get device(): Device {
    return this.shared.device;
  }
  /** the unet/model.onnx this pipeline samples with (for a withUnet() copy from bytes: the path it replaced) */
  get unetPath(): string {
    return this.unet.path;
  }
  get unetTimestep(): TimestepInput {
    return { ...this.unet.timestep };
  }
  /** inputs of the UNet beyond sample/timestep/encoder_hidden_states, fed from UnetConditioning.extraInputs */
  get unetExtraInputs(): ValueInfo[] {
    return this.unet.extraInputs.map((v) => ({ ...v, shape: [...v.shape] }));
  }
  /** onnxruntime time and thread-hop time accumulated by every session of this pipeline's worker */
  get stats(): HostStats {
    return { ...this.shared.host.stats };
  }
  /**
   * The folder models (text_encoder, unet, vae_decoder) whose onnxruntime session has been created so far, in
   * creation order. Sessions are created on first use, so `edit --batch` (text encoder only) never pays for the
   * UNet's or the VAE's; a withUnet() copy's own UNet session is not listed. Read-only: a copy of the list.
   * Example: `const p = await loadPipeline(); await p.encodePrompts(['a']); p.sessionsCreated()` →
   * `['text_encoder']` (the UNet and the VAE have none until generate runs them).
   */
  sessionsCreated(): FolderModel[] {
    return [...this.shared.created];
  }
  /** the worker that runs this pipeline's sessions (shared by withUnet() copies) */
  get host(): SessionHost {
    return this.shared.host;
  }
  /** bytes of the UNet's weights on disk (unet/model.onnx plus its external data files) */
  get unetWeightBytes(): number {
    return this.shared.unetWeightBytes;
  }
  /** bytes of all three models on disk (UNet, text encoder, VAE decoder): what their sessions hold as weights */
  get modelBytes(): number {
    return this.shared.unetWeightBytes + this.shared.otherModelBytes;
  }
  /** attention heads per transformer block (unet/config.json attention_head_dim; 8, SD 1.x's, when absent) */
  get attentionHeads(): number {
    return this.shared.attentionHeads;
  }
  /** channels of the UNet's first level (unet/config.json block_out_channels[0]; 320, SD 1.x's, when absent) */
  get unetBaseChannels(): number {
    return this.shared.unetBaseChannels;
  }
  /** channels of the VAE decoder's widest level (vae_decoder/config.json block_out_channels[0]; 128 when absent) */
  get vaeBaseChannels(): number {
    return this.shared.vaeBaseChannels;
  }
  /** whether this pipeline's UNet session can still take another slicing (its own folder UNet, not a withUnet() copy) */
  get canSetAttentionSlices(): boolean {
    return this.unet.session !== undefined;
  }
  /** the query slices UNet sessions created from now on use for self-attention (setAttentionSlices) */
  get attentionSlices(): number {
    return this.shared.attentionSlices;
  }
  /** what this pipeline's UNet session was created with (null until it is created): attentions found and sliced */
  get attentionSlicing(): SlicingReport | null {
    return this.unet.slicing === null ? null : { ...this.unet.slicing };
  }

  /**
   * Sets the query slices of self-attention (1…MAX_ATTENTION_SLICES; 1 = the graph as exported) for UNet
   * sessions created from now on: the folder UNet's, and withUnet() copies made afterwards. A folder UNet session
   * that exists with another slicing is released, to be created again at its next run. Images agree with the
   * unsliced ones within float rounding (at most 1/255 per pixel, test/attention-slicing.test.js).
   * Example: `await pipeline.setAttentionSlices(4)` before `generate(pipeline, { …, height: 512, width: 512 })`.
   */
  async setAttentionSlices(slices: number): Promise<void> {
    checkAttentionSlices(slices);
    this.shared.attentionSlices = slices;
    const s = this.unet.session;
    if (s === undefined || s.ready === null) return;
    await s.ready.catch(() => undefined);
    if ((this.unet.slicing?.slices ?? 1) === slices) return;
    await this.releaseUnet();
  }

  /**
   * Releases this pipeline's UNet session now, so that its weights and buffers are freed before another UNet is
   * created (weights mode: the patched copy). The folder UNet's session is created again at its next run; a
   * withUnet() copy cannot run after this. Example: `await pipeline.releaseUnet(); const edited = await pipeline.withUnet(src)`.
   */
  async releaseUnet(): Promise<void> {
    const s = this.unet.session;
    if (s === undefined) {
      await this.shared.host.release(this.unet.key).catch(() => undefined);
      return;
    }
    if (s.ready === null) return;
    await s.ready.catch(() => undefined);
    await this.shared.host.release(s.key).catch(() => undefined);
    s.ready = null;
    this.unet.slicing = null;
  }

  /** @internal */
  static async load(dir: string | undefined, opts: PipelineOptions): Promise<Pipeline> {
    const root = resolve(dir ?? defaultModelDir);
    const device = opts.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw invalidInput('device', 'cpu or cuda', device);
    if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1))
      throw invalidInput('threads', 'a positive integer', opts.threads);
    if (opts.threads !== undefined && opts.threads > MAX_THREADS) throw invalidInput('threads', `at most ${MAX_THREADS}`, opts.threads);
    if (opts.arena !== undefined && typeof opts.arena !== 'boolean') throw invalidInput('arena', 'true or false', opts.arena);
    if (!(await isDir(root))) {
      throw new ModelError(
        root,
        dir === undefined
          ? `the embedded model is missing: ${root} does not exist (the package was installed without models/toy-shapes)`
          : `model folder ${root} does not exist`,
      );
    }
    const required = [
      'model_index.json',
      'text_encoder/model.onnx',
      'unet/model.onnx',
      'vae_decoder/model.onnx',
      'tokenizer',
      'scheduler/scheduler_config.json',
    ];
    const missing: string[] = [];
    const broken: string[] = [];
    for (const r of required) {
      const problem = await entryProblem(root, r, r === 'tokenizer' ? 'folder' : 'file');
      if (problem === 'missing') missing.push(r);
      else if (problem !== null) broken.push(`${r} ${problem}`);
    }
    if (broken.length > 0)
      throw new ModelError(
        root,
        `${root} is not a usable SD pipeline folder: ${broken.join('; ')}${missing.length > 0 ? `; missing ${missing.join(', ')}` : ''}`,
      );
    if (missing.length > 0) throw new ModelError(root, `${root} is not a complete SD pipeline folder: missing ${missing.join(', ')}`);
    const index = readModelIndex(await readJsonFile(join(root, 'model_index.json')));
    const cls = index.className ?? '';
    if (/XL|Flux|SD3|StableDiffusion3|Kandinsky|LatentConsistency/i.test(cls))
      throw new ModelError(
        join(root, 'model_index.json'),
        `${root}: model_index.json says ${cls}; only Stable Diffusion 1.x pipelines are supported`,
      );
    const unetPath = join(root, 'unet', 'model.onnx');
    const marker = await findPackedMarker({ path: unetPath });
    if (marker !== null) {
      throw new ModelError(
        unetPath,
        `${unetPath} is an onnxruntime "GPU-optimized" UNet (found ${marker}): its K/V projections are packed and it does not run on CPU; use an unoptimized export (diffusers or optimum-cli)`,
      );
    }
    // Every config value read below is checked here (lib/model/configs.ts), before any session loads.
    const schedulerJson = await readJsonFile(join(root, SCHEDULER_CONFIG_FILE));
    validateSchedulerConfig(schedulerJson);
    const schedulerConfig = schedulerJson as SchedulerConfig;
    const vaeConfig = readVaeConfig(await optionalJson(join(root, 'vae_decoder', 'config.json')));
    const unetRaw = await optionalJson(join(root, 'unet', 'config.json'));
    const unetConfig = readUnetConfig(unetRaw);
    const tokenizer = await ClipTokenizer.fromFolder(join(root, 'tokenizer'));

    const host = new SessionHost();
    try {
      const config: SessionConfig = {
        device,
        threads: opts.threads,
        spinning: opts.spinning === true,
        ...(opts.arena === false ? { arena: false } : {}),
      };
      const created: FolderModel[] = [];
      // The graphs' inputs and outputs are checked now, so that a bad folder fails before any work; the sessions
      // themselves wait for their first run (ensureSession). A graph that cannot tell gets its session now.
      const describeModel = async (model: FolderModel): Promise<{ info: SessionInfo; session: FolderSession }> => {
        const path = join(root, model, 'model.onnx');
        const session: FolderSession = { model, key: host.newKey(model), path, ready: null };
        const fromGraph = await graphInterface(path);
        // The text encoder's output width is checked against the UNet's: a width the graph only names is one
        // that onnxruntime's shape inference may know, so that session is asked now.
        const widthUnknown = model === 'text_encoder' && fromGraph !== null && lastDim(textOutputOf(fromGraph)) === null;
        if (fromGraph !== null && !widthUnknown) return { info: fromGraph, session };
        const info = await host.load(session.key, { path }, config, `${model}/model.onnx`);
        created.push(model);
        session.ready = Promise.resolve();
        return { info, session };
      };
      const { info: textInfo, session: text } = await describeModel('text_encoder');
      const { info: unetInfo, session: unetSession } = await describeModel('unet');
      const { info: vaeInfo, session: vae } = await describeModel('vae_decoder');

      const ids = textInfo.inputs.find((i) => i.name === 'input_ids');
      if (ids === undefined || textInfo.inputs.length !== 1)
        throw new ModelError(
          'text_encoder/model.onnx',
          `text_encoder/model.onnx: expected one input input_ids, got ${fmtInputs(textInfo)}`,
        );
      if (ids.type !== 'int32' && ids.type !== 'int64')
        throw new ModelError('text_encoder/model.onnx', `text_encoder/model.onnx: input_ids has type ${ids.type}, expected int32 or int64`);
      const textOut = textOutputOf(textInfo);
      if (textOut === undefined) throw new ModelError('text_encoder/model.onnx', 'text_encoder/model.onnx has no outputs');
      const unet = checkUnet(unetInfo, 'unet/model.onnx', false);
      const latent = vaeInfo.inputs.find((i) => i.name === 'latent_sample');
      if (latent === undefined || vaeInfo.inputs.length !== 1)
        throw new ModelError(
          'vae_decoder/model.onnx',
          `vae_decoder/model.onnx: expected one input latent_sample, got ${fmtInputs(vaeInfo)}`,
        );
      if (!isFloat(latent.type))
        throw new ModelError(
          'vae_decoder/model.onnx',
          `vae_decoder/model.onnx: latent_sample has type ${latent.type}, expected float32 or float16`,
        );
      const vaeOut = vaeInfo.outputs.find((o) => o.name === 'sample') ?? vaeInfo.outputs[0];
      if (vaeOut === undefined) throw new ModelError('vae_decoder/model.onnx', 'vae_decoder/model.onnx has no outputs');

      const ehs = unetInfo.inputs.find((i) => i.name === 'encoder_hidden_states');
      const sample = unetInfo.inputs.find((i) => i.name === 'sample')!;
      const textW = lastDim(textOut);
      const unetW = lastDim(ehs);
      if (textW !== null && unetW !== null && textW !== unetW)
        throw new ModelError(root, `${root}: text encoder width ${textW} does not match the UNet's encoder_hidden_states width ${unetW}`);
      const ch = sample.shape[1];
      const latentChannels = typeof ch === 'number' && ch > 0 ? ch : (unetConfig.inChannels ?? 4);
      const boc = vaeConfig.blockOutChannels;
      const vaeScaleFactor = vaeConfig.downsamplingFactor ?? (boc !== undefined ? 2 ** (boc.length - 1) : 8);
      const ubc = unetConfig.blockOutChannels;
      const sizeMultiple = vaeScaleFactor * (ubc !== undefined ? 2 ** (ubc.length - 1) : 1);
      const sampleSize = unetConfig.sampleSize;
      const h = sample.shape[2];
      const defaultSize =
        typeof h === 'number' && h > 0
          ? h * vaeScaleFactor
          : sampleSize !== undefined
            ? sampleSize * vaeScaleFactor
            : vaeScaleFactor === 8
              ? 512
              : 64;
      const vb = latent.shape[0];
      const shared: Shared = {
        dir: root,
        host,
        device,
        threads: opts.threads,
        spinning: opts.spinning === true,
        sessionConfig: config,
        attentionSlices: 1,
        slicedAttention: 'self',
        unetWeightBytes: await folderBytes(join(root, 'unet')),
        otherModelBytes: (await folderBytes(join(root, 'text_encoder'))) + (await folderBytes(join(root, 'vae_decoder'))),
        attentionHeads: headsOf(unetRaw.attention_head_dim),
        unetBaseChannels: unetConfig.blockOutChannels?.[0] ?? 320,
        vaeBaseChannels: vaeConfig.blockOutChannels?.[0] ?? 128,
        created,
        tokenizer,
        text,
        textInfo,
        textOutput: textOut.name,
        // fp16 VAE decoders are run one latent at a time, as diffusers' ONNX pipeline does ("strange result for
        // half-precision vae decoder if batchsize>1").
        vae,
        vaeOutput: vaeOut.name,
        vaeBatch: typeof vb === 'number' && vb > 0 ? vb : latent.type === 'float16' ? 1 : null,
        textWidth: textW ?? unetW ?? 0,
        latentChannels,
        schedulerConfig,
        vaeScalingFactor: vaeConfig.scalingFactor ?? 0.18215,
        vaeScaleFactor,
        sizeMultiple,
        defaultSize,
      };
      const pipeline = new Pipeline(shared, { ...unet, path: unetPath, key: unetSession.key, session: unetSession, slicing: null }, true);
      if (shared.textWidth === 0) {
        // Neither graph declares d: one encode tells it.
        const e = await pipeline.encodePrompts(['']);
        shared.textWidth = e.length / tokenizer.maxLength;
      }
      return pipeline;
    } catch (err) {
      await host.close();
      throw err;
    }
  }

  /** Text-encoder output [B, 77, d] float32 (converted from fp16 if the model is fp16), one row per prompt. */
  async encodePrompts(prompts: string[]): Promise<Float32Array> {
    if (!Array.isArray(prompts) || prompts.length === 0) throw new InputError('prompts', 'no prompts to encode', { received: prompts });
    const L = this.tokenizer.maxLength;
    const fixed = this.shared.textInfo.inputs[0]!.shape[0];
    const chunk = typeof fixed === 'number' && fixed > 0 ? fixed : prompts.length;
    const parts: Float32Array[] = [];
    for (let i = 0; i < prompts.length; i += chunk) {
      const group = prompts.slice(i, i + chunk);
      while (group.length < chunk) group.push('');
      const ids = new Int32Array(chunk * L);
      group.forEach((p, k) => {
        if (typeof p !== 'string') throw new InputError('prompts', `prompt ${i + k} is not a string`, { received: p });
        ids.set(this.tokenizer.encode(p).ids, k * L);
      });
      await ensureSession(this.shared, this.shared.text);
      const r = await this.shared.host.run(this.shared.text.key, { input_ids: { dims: [chunk, L], data: ids } }, [ids.buffer]);
      const out = r.outputs[this.shared.textOutput]!;
      if (out.dims.length !== 3 || out.dims[0] !== chunk || out.dims[1] !== L)
        throw new Error(`text encoder returned shape [${out.dims.join(',')}], expected [${chunk},${L},d]`);
      const used = Math.min(chunk, prompts.length - i);
      parts.push(out.data.subarray(0, used * L * out.dims[2]!));
    }
    if (parts.length === 1) return parts[0]!;
    const total = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) {
      total.set(p, o);
      o += p.length;
    }
    return total;
  }

  /** One UNet call: returns out_sample as float32, same shape as the sample. */
  async runUnet(f: UnetFeeds): Promise<Float32Array> {
    const [b] = f.dims;
    const t = f.timestep;
    const ts = this.unet.timestep;
    const tsFeed =
      ts.form === 'scalar'
        ? { dims: [], data: new Float32Array([t]) }
        : ts.form === 'one'
          ? { dims: [1], data: new Float32Array([t]) }
          : { dims: [b], data: new Float32Array(b).fill(t) };
    const feeds: Record<string, Feed> = {
      sample: { dims: [...f.dims], data: f.sample },
      timestep: tsFeed,
      encoder_hidden_states: f.encoderHiddenStates,
    };
    for (const e of this.unet.extraInputs) {
      const v = f.extraInputs?.[e.name];
      if (v === undefined)
        throw new InputError('extraInputs', `this UNet needs the extra input '${e.name}': pass it in conditioning.extraInputs`);
      feeds[e.name] = v;
    }
    const transfer =
      f.transferSample === true && f.sample.byteOffset === 0 && f.sample.byteLength === f.sample.buffer.byteLength
        ? [f.sample.buffer as ArrayBuffer]
        : [];
    await ensureUnetSession(this.shared, this.unet);
    try {
      const r = await this.shared.host.run(this.unet.key, feeds, transfer);
      return r.outputs[this.unet.outputName]!.data;
    } catch (err) {
      if (err instanceof TimeEditError) throw err;
      // onnxruntime's own failure (e.g. a size a fixed-shape export does not take): the model cannot do this run.
      const [, , h, w] = f.dims;
      throw new ModelError(
        this.unet.path,
        `the UNet failed on a ${h}×${w} latent (${h * this.vaeScaleFactor}×${w * this.vaeScaleFactor} image): ${(err as Error).message.split('\n')[0]}`,
      );
    }
  }

  /**
   * VAE decode of n latents [n, c, h, w] (already divided by vaeScalingFactor): images [n, 3, H, W] in [-1, 1].
   * `maxBatch`: at most this many latents per VAE call (memory; the images are the same). Example:
   * `await pipeline.decode(latents, [2, 4, 8, 8], 1)` decodes one latent at a time.
   */
  async decode(
    latents: Float32Array,
    dims: [number, number, number, number],
    maxBatch?: number,
  ): Promise<{ data: Float32Array; dims: number[] }> {
    const [n, c, h, w] = dims;
    const per = c * h * w;
    const chunk = this.shared.vaeBatch ?? Math.min(n, maxBatch ?? n);
    const outs: Float32Array[] = [];
    let outDims: number[] = [];
    for (let i = 0; i < n; i += chunk) {
      const k = Math.min(chunk, n - i);
      const data = new Float32Array(chunk * per);
      data.set(latents.subarray(i * per, (i + k) * per));
      await ensureSession(this.shared, this.shared.vae);
      const r = await this.shared.host.run(this.shared.vae.key, { latent_sample: { dims: [chunk, c, h, w], data } }, [data.buffer]);
      const o = r.outputs[this.shared.vaeOutput]!;
      outDims = o.dims;
      const imgPer = o.data.length / chunk;
      outs.push(o.data.subarray(0, k * imgPer));
    }
    const total = new Float32Array(outs.reduce((s, p) => s + p.length, 0));
    let off = 0;
    for (const p of outs) {
      total.set(p, off);
      off += p.length;
    }
    return { data: total, dims: [n, ...outDims.slice(1)] };
  }

  /**
   * A pipeline that samples with another UNet and shares everything else (tokenizer, text encoder, VAE, worker).
   * `{ path }` loads a model file (its external data resolved next to it); `{ modelBytes, externalData }` loads
   * from memory, where each externalData entry replaces the external file whose `location` equals its path, even if
   * that file exists on disk. Extra float inputs are allowed and must be fed through UnetConditioning.extraInputs.
   * Example: `const edited = await pipeline.withUnet({ path: pipeline.unetPath, ... })`; `await edited.close()`
   * releases only the new UNet session. `transferBytes`: hand `modelBytes`' buffer to the worker instead of
   * copying it (the caller's array is unusable afterwards), so the model is not held twice while it loads.
   * `temporaryPath`: `path` is a temp file the caller removes once this returns (a rewritten UNet written for
   * onnxruntime to read): the copy's unetPath stays this pipeline's and its errors name "the replacement UNet".
   */
  async withUnet(source: ModelSource, options: { transferBytes?: boolean; temporaryPath?: boolean } = {}): Promise<Pipeline> {
    const temporary = options.temporaryPath === true && 'path' in source;
    const label = 'path' in source && !temporary ? source.path : 'the replacement UNet';
    if ('path' in source) {
      if (!(await isFile(source.path))) throw new ModelError(source.path, `UNet model ${source.path} does not exist`);
    } else if (!(source.modelBytes instanceof Uint8Array) || source.modelBytes.byteLength === 0) {
      throw invalidInput('modelBytes', 'a non-empty Uint8Array', source.modelBytes);
    }
    const marker = await findPackedMarker('path' in source ? source : { bytes: source.modelBytes });
    if (marker !== null)
      throw new ModelError(label, `${label} is an onnxruntime "GPU-optimized" UNet (found ${marker}); use an unoptimized export`);
    const key = this.shared.host.newKey('unet');
    // The copy's attention is sliced as this pipeline's setting says now (setAttentionSlices does not reach it later).
    const sliced = await slicedUnetSource(source, this.shared.attentionSlices, this.shared.slicedAttention);
    let info: SessionInfo;
    try {
      info = await this.shared.host.load(
        key,
        sliced?.source ?? source,
        this.shared.sessionConfig,
        'path' in source && !temporary ? `${basename(dirname(source.path))}/${basename(source.path)}` : label,
        sliced?.transfer ?? (options.transferBytes === true && 'modelBytes' in source ? ownedBuffer(source.modelBytes) : []),
      );
    } finally {
      sliced?.cleanup();
    }
    try {
      const unet = checkUnet(info, label, true);
      const w = lastDim(info.inputs.find((i) => i.name === 'encoder_hidden_states'));
      if (w !== null && w !== this.textWidth)
        throw new ModelError(label, `${label}: encoder_hidden_states width ${w} does not match the text encoder's ${this.textWidth}`);
      return new Pipeline(
        this.shared,
        { ...unet, path: 'path' in source && !temporary ? resolve(source.path) : this.unet.path, key, slicing: sliced?.report ?? UNSLICED },
        false,
      );
    } catch (err) {
      await this.shared.host.release(key);
      throw err;
    }
  }

  /** Releases this pipeline's sessions: the whole worker for a loaded pipeline, only its UNet for a withUnet() copy. */
  async close(): Promise<void> {
    if (this.ownsHost) await this.shared.host.close();
    else await this.shared.host.release(this.unet.key).catch(() => undefined);
  }
}

/** The buffer of `bytes` when the array spans all of it (a transferable), else nothing. */
function ownedBuffer(bytes: Uint8Array): ArrayBuffer[] {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? [bytes.buffer]
    : [];
}

const UNSLICED: SlicingReport = { found: 0, selfAttention: 0, sliced: 0, slices: 1 };

/** Checks an attentionSlices option: undefined or an integer in 1…MAX_ATTENTION_SLICES. */
function checkAttentionSlices(n: unknown): void {
  if (n !== undefined && (!Number.isInteger(n) || (n as number) < 1 || (n as number) > MAX_ATTENTION_SLICES))
    throw invalidInput('attentionSlices', `an integer in 1…${MAX_ATTENTION_SLICES}`, n);
}

/** Sum of the file sizes in a folder (the UNet's graph and its external weights), 0 where it cannot be read. */
async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isFile())
      total += await stat(join(dir, e.name)).then(
        (s) => s.size,
        () => 0,
      );
  }
  return total;
}

/** unet/config.json attention_head_dim (a number or one per block; SD 1.x: 8), the largest; 8 when absent or odd. */
function headsOf(raw: unknown): number {
  const list = Array.isArray(raw) ? raw : [raw];
  const ok = list.filter((v): v is number => Number.isInteger(v) && (v as number) > 0 && (v as number) <= 4096);
  return ok.length > 0 && ok.length === list.length ? Math.max(...ok) : 8;
}

/**
 * Creates the folder UNet's session the first time it runs, with its attention sliced as the pipeline's setting
 * says (setAttentionSlices); a withUnet() copy's session exists already.
 */
function ensureUnetSession(shared: Shared, unet: UnetInfo): Promise<void> {
  const s = unet.session;
  if (s === undefined) return Promise.resolve();
  if (s.ready !== null && unet.slicing === null) unet.slicing = UNSLICED; // created at load, to read its interface
  s.ready ??= (async () => {
    const sliced = await slicedUnetSource({ path: s.path }, shared.attentionSlices, shared.slicedAttention);
    try {
      await shared.host.load(s.key, sliced?.source ?? { path: s.path }, shared.sessionConfig, 'unet/model.onnx', sliced?.transfer ?? []);
    } finally {
      sliced?.cleanup();
    }
    unet.slicing = sliced?.report ?? UNSLICED;
    if (!shared.created.includes('unet')) shared.created.push('unet');
  })();
  return s.ready;
}

/** Creates a folder session the first time it is needed; concurrent first uses share one creation. */
function ensureSession(shared: Shared, s: FolderSession): Promise<void> {
  s.ready ??= shared.host.load(s.key, { path: s.path }, shared.sessionConfig, `${s.model}/model.onnx`).then(() => {
    shared.created.push(s.model);
  });
  return s.ready;
}

/**
 * Loads and validates a pipeline folder (default: the embedded models/toy-shapes). Errors name what is wrong: a
 * ModelError for a missing folder or subfolder, an unreadable or corrupt model.onnx, unexpected inputs or dtypes,
 * a packed-KV UNet; an InputError for a bad option; a BackendUnavailableError when device 'cuda' cannot run.
 * Example: `const p = await loadPipeline(); const e = await p.encodePrompts(['a circle']); await p.close();`
 */
export function loadPipeline(dir?: string, opts: PipelineOptions = {}): Promise<Pipeline> {
  return Pipeline.load(dir, opts);
}

// Applying an Edit to a UNet, three ways that give the same outputs:
//  - embedding mode: the UNet is untouched; every conditioning it receives (the unconditional one included) is
//    replaced by E·Mᵀ. When some step edits V only, the graph is rewritten once so the V projections read a
//    second input `encoder_hidden_states_v` (E·M_vᵀ) while K keeps reading `encoder_hidden_states` (E·M_kᵀ)
//    (a K-only step the same way round). When some step edits only some layers, each group of projections edited
//    by the same steps reads its own input instead (routeConditioningUnet), and unedited ones read E itself;
//  - weights mode: the K/V initializers are replaced by W·M (a patched copy of the graph, run from memory);
//  - export: the patched UNet written to a new pipeline folder, everything else linked or copied.
import {
  closeSync,
  constants as fsConstants,
  copyFileSync,
  existsSync,
  openSync,
  linkSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { findCrossAttention, type CrossAttentionMap } from '../model/cross-attention.js';
import {
  decodeModel,
  encodeModel,
  externalDataRef,
  readFileSlice,
  saveModel,
  setTensorFloat32,
  tensorToFloat32,
  allTensors,
  type LoadedModel,
  type ModelProto,
  type TensorProto,
} from '../model/onnx/index.js';
import {
  type Edit,
  EditError,
  needsSplitConditioning,
  stepEdits,
  transformRows,
  transformRowsBySteps,
  transformWeightRows,
} from './edit.js';
import { makeDirectory } from '../fs/make-directory.js';
import { writeAllAt } from '../fs/write-at.js';
import { addonAvailable, backendFor, trySolverBackend, type BackendKind } from '../solver/backend.js';
import { patchWeights } from '../solver/native.js';

/** Name of the V-path conditioning input added by the split rewrite (internal: not on the package root). */
export const V_INPUT = 'encoder_hidden_states_v';

function initializerMap(model: ModelProto): Map<string, TensorProto> {
  return new Map(model.graph!.initializer.map((t) => [t.name ?? '', t]));
}

/** [d, out] ONNX weight ↔ [out, d] PyTorch rows. */
function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}

/** Options of patchUnetWeights. */
export interface PatchOptions {
  /**
   * Patch on the native addon with this backend, whatever the model's size (an Error when it is not built or the
   * backend is not usable here). Default: the addon with solverBackend()'s choice for large models, TypeScript
   * (float64) for small ones and wherever the addon is not available.
   */
  backend?: BackendKind;
}

/** Above this many multiply-adds (all steps of the edit together), weights are patched by the native addon when it is built. */
const NATIVE_PATCH_THRESHOLD = 2e8;

/**
 * A fresh copy of the UNet with every edited K/V weight replaced by W·M (embedded raw data, original dtype).
 * Tensors not edited keep their storage (external references stay external, relative to the same folder).
 * Large models are patched by the native addon, all projections of a path stacked into one (Σout × d) matrix
 * (one low-rank product per step: W + (W·Dᵀ)·G in float32 BLAS); small ones, and any model where the addon is
 * not built, per projection in float64 TypeScript; the two differ only by float32 vs float64 arithmetic.
 *
 * @example
 *   const ctx = await openEditContext(pipeline);
 *   const model = await patchUnetWeights(ctx.unet, ctx.map, edit);   // an ONNX ModelProto: saveModel or encodeModel it
 */
export async function patchUnetWeights(
  unet: LoadedModel,
  map: CrossAttentionMap,
  edit: Edit,
  options: PatchOptions = {},
): Promise<ModelProto> {
  const backend = patchBackend(map, edit, options);
  const model = decodeModel(unet.bytes);
  await patchInitializers(initializerMap(model), unet.dir, map, edit, backend);
  return model;
}

/** The addon backend patching runs on (undefined: the TypeScript path), as patchUnetWeights documents. */
function patchBackend(map: CrossAttentionMap, edit: Edit, options: PatchOptions): BackendKind | undefined {
  let backend: BackendKind | undefined; // undefined: the TypeScript path
  if (options.backend !== undefined) {
    if (!addonAvailable()) throw new EditError('the native addon is not built');
    backend = backendFor(options.backend, 'options.backend').kind;
  } else {
    const rowsPerPath = map.layers.reduce((s, l) => s + l.width, 0);
    const work = edit.steps.reduce((s, st) => s + 2 * rowsPerPath * edit.d * st.rows * 2, 0);
    // trySolverBackend is undefined without the addon (or with a TIME_EDIT_BACKEND not usable here): TypeScript then.
    if (work > NATIVE_PATCH_THRESHOLD) backend = trySolverBackend()?.kind;
  }
  return backend;
}

/** Replaces the edited K/V tensors of `inits` (external ones read relative to `dir`) by W·M, in place. */
async function patchInitializers(
  inits: Map<string, TensorProto>,
  dir: string,
  map: CrossAttentionMap,
  edit: Edit,
  backend: BackendKind | undefined,
): Promise<void> {
  if (backend === undefined) patchPerProjection(inits, dir, map, edit);
  else await patchStacked(inits, dir, map, edit, backend);
}

/** The TypeScript path: each projection patched on its own, in float64 (transformWeightRows). */
function patchPerProjection(inits: Map<string, TensorProto>, dir: string, map: CrossAttentionMap, edit: Edit): void {
  if (map.d !== edit.d) throw new EditError(`the edit has width ${edit.d}, the UNet's conditioning has ${map.d}`);
  for (const layer of map.layers)
    for (const p of [layer.k, layer.v]) {
      if (!edit.steps.some((s) => stepEdits(s, p.kind, layer.index))) continue;
      const t = inits.get(p.initializer);
      if (t === undefined) throw new EditError(`initializer ${p.initializer} vanished from the UNet`);
      const w = transpose(tensorToFloat32(t, dir), p.inputWidth, p.width); // → [out, d]
      setTensorFloat32(t, transpose(transformWeightRows(edit, w, p.kind, layer.index), p.width, p.inputWidth));
    }
}

/** The native path: the projections of a path stacked into one matrix, patched by the addon once per step. */
async function patchStacked(
  inits: Map<string, TensorProto>,
  dir: string,
  map: CrossAttentionMap,
  edit: Edit,
  backend: BackendKind,
): Promise<void> {
  if (map.d !== edit.d) throw new EditError(`the edit has width ${edit.d}, the UNet's conditioning has ${map.d}`);
  const rowsPerPath = map.layers.reduce((s, l) => s + l.width, 0);
  for (const path of ['k', 'v'] as const) {
    const steps = edit.steps.filter((s) => stepEdits(s, path));
    if (steps.length === 0) continue;
    const projections = map.layers.map((l) => l[path]);
    let stacked: Float32Array = new Float32Array(rowsPerPath * edit.d);
    let at = 0;
    for (const p of projections) {
      const t = inits.get(p.initializer);
      if (t === undefined) throw new EditError(`initializer ${p.initializer} vanished from the UNet`);
      stacked.set(transpose(tensorToFloat32(t, dir), p.inputWidth, p.width), at);
      at += p.width * p.inputWidth;
    }
    for (const st of steps) {
      const lowRank = { d: edit.d, lowRank: { D: st.D, G: st.G, rows: st.rows } };
      if (st.layers === undefined) {
        stacked = await patchWeights({ data: stacked, rows: rowsPerPath }, lowRank, { backend });
        continue;
      }
      // A step that edits a layer subset: only those layers' rows are patched, the others keep their bits.
      let off = 0;
      for (const [i, p] of projections.entries()) {
        const size = p.width * p.inputWidth;
        if (st.layers.includes(map.layers[i]!.index))
          stacked.set(await patchWeights({ data: stacked.slice(off, off + size), rows: p.width }, lowRank, { backend }), off);
        off += size;
      }
    }
    at = 0;
    for (const p of projections) {
      setTensorFloat32(inits.get(p.initializer)!, transpose(stacked.subarray(at, at + p.width * p.inputWidth), p.width, p.inputWidth));
      at += p.width * p.inputWidth;
    }
  }
}

/** Where one K/V weight of a self-contained UNet file lies in the file: the tensor without its data, and its bytes. */
export interface KvTensorPlace {
  /** the TensorProto (name, dims, data type) without rawData */
  shell: TensorProto;
  offset: number;
  length: number;
}

/**
 * Where the K/V weights of `unet` lie in its file, for patchedUnetCopy; undefined when that cannot be used: the
 * model has external data, or some K/V weight is not stored as raw bytes in the file (float_data, …).
 * Example: `const places = kvTensorPlaces(await loadModel(path), map)` → 32 places for an SD 1.x UNet.
 */
export function kvTensorPlaces(unet: LoadedModel, map: CrossAttentionMap): KvTensorPlace[] | undefined {
  if (hasExternalData(unet.model)) return undefined;
  const inits = initializerMap(unet.model);
  const places: KvTensorPlace[] = [];
  for (const layer of map.layers)
    for (const p of [layer.k, layer.v]) {
      const t = inits.get(p.initializer);
      const raw = t?.rawData;
      // decodeModel keeps payloads as views of the file's bytes: the view's place is the tensor's place in the file.
      if (t === undefined || raw === undefined || raw.buffer !== unet.bytes.buffer) return undefined;
      const { rawData: _data, ...shell } = t;
      places.push({ shell: { ...shell, dims: [...t.dims] }, offset: raw.byteOffset - unet.bytes.byteOffset, length: raw.byteLength });
    }
  return places;
}

/**
 * Weights mode without the model in memory: a copy of the self-contained UNet file `path` (a file-system copy,
 * or a clone where the file system can) in a temp folder of the system temp folder, whose edited K/V weights are
 * replaced by W·M in place; only the K/V weights are read (from the copy) and written. The tensors get the bytes
 * patchUnetWeights gives them; every other byte is the original's, so onnxruntime reads the same model.
 * `places`: kvTensorPlaces of that file. `check` runs before and after the copy: the caller's test that the file is
 * still the one `places` were read from. Load the returned `path`, then call `cleanup()`.
 * Example: `const src = await patchedUnetCopy(pipeline.unetPath, places, map, edit); …; src.cleanup()`.
 */
export async function patchedUnetCopy(
  path: string,
  places: KvTensorPlace[],
  map: CrossAttentionMap,
  edit: Edit,
  options: PatchOptions & { check?: () => void } = {},
): Promise<{ path: string; cleanup: () => void }> {
  const backend = patchBackend(map, edit, options);
  const dir = mkdtempSync(join(tmpdir(), '.time-edit-unet-'));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  try {
    const target = join(dir, 'model.onnx');
    options.check?.();
    copyFileSync(path, target, fsConstants.COPYFILE_FICLONE);
    options.check?.();
    const read = new Map(places.map((p) => [p.shell.name ?? '', readFileSlice(target, p.offset, p.length)]));
    const inits = new Map(places.map((p) => [p.shell.name ?? '', { ...p.shell, rawData: read.get(p.shell.name ?? '')! }]));
    await patchInitializers(inits, dir, map, edit, backend);
    const fd = openSync(target, 'r+');
    try {
      for (const p of places) {
        const raw = inits.get(p.shell.name ?? '')!.rawData!;
        if (raw === read.get(p.shell.name ?? '')) continue; // not edited
        if (raw.byteLength !== p.length)
          throw new EditError(`patched ${p.shell.name ?? '?'} has ${raw.byteLength} bytes, the file holds ${p.length}`);
        writeAllAt(fd, raw, p.offset);
      }
    } finally {
      closeSync(fd);
    }
    return { path: target, cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}

/** A copy of the UNet whose V projections read a separate input `encoder_hidden_states_v` (same type). */
export function splitConditioningUnet(unet: LoadedModel, map: CrossAttentionMap): ModelProto {
  return rewireConditioning(
    unet,
    map,
    map.layers.map((l) => ({ node: l.v.nodeIndex, input: V_INPUT })),
    () => '__v',
  );
}

/**
 * One group of K/V projections that reads its own conditioning input in embedding mode: the projections edited by
 * exactly the same steps (`steps`, indices into edit.steps), which therefore see the same E·Mᵀ.
 */
export interface ConditioningRoute {
  input: string;
  steps: number[];
  projections: { layer: number; kind: 'k' | 'v' }[];
}

/** Prefix of the inputs routeConditioningUnet adds: `encoder_hidden_states_r0`, `_r1`, … (internal). */
const ROUTE_INPUT = 'encoder_hidden_states_r';

/**
 * The routes of an edit whose steps edit layer subsets: every projection that some step edits goes to the route of
 * its set of steps; projections no step edits are in no route and keep reading the original conditioning, unedited
 * (as the unpatched weights of weights mode would see it).
 *
 * @example
 *   conditioningRoutes({ ...edit, steps: [{ ...step, mode: 'k', layers: [6] }] }, map);
 *   // [{ input: 'encoder_hidden_states_r0', steps: [0], projections: [{ layer: 6, kind: 'k' }] }]
 */
export function conditioningRoutes(edit: Edit, map: CrossAttentionMap): ConditioningRoute[] {
  const bySteps = new Map<string, ConditioningRoute>();
  for (const layer of map.layers)
    for (const kind of ['k', 'v'] as const) {
      const steps = edit.steps.flatMap((s, i) => (stepEdits(s, kind, layer.index) ? [i] : []));
      if (steps.length === 0) continue;
      const key = steps.join(',');
      let route = bySteps.get(key);
      if (route === undefined) {
        route = { input: `${ROUTE_INPUT}${bySteps.size}`, steps, projections: [] };
        bySteps.set(key, route);
      }
      route.projections.push({ layer: layer.index, kind });
    }
  for (const s of edit.steps)
    for (const l of s.layers ?? [])
      if (l >= map.layers.length)
        throw new EditError(`the edit names cross-attention layer ${l}; this UNet has layers 0-${map.layers.length - 1}`);
  return [...bySteps.values()];
}

/** A copy of the UNet whose projections of each route read that route's input (same type as the conditioning). */
export function routeConditioningUnet(unet: LoadedModel, map: CrossAttentionMap, routes: ConditioningRoute[]): ModelProto {
  const assignments = routes.flatMap((r) => r.projections.map((p) => ({ node: map.layers[p.layer]![p.kind].nodeIndex, input: r.input })));
  return rewireConditioning(unet, map, assignments, (input) => `__${input.slice(ROUTE_INPUT.length - 1)}`);
}

/**
 * Makes each assigned MatMul read its input instead of the conditioning: inputs are added (typed as the
 * conditioning), and a Cast/Identity chain between the conditioning and a MatMul is rebuilt from the new input, once
 * per (chain, input), its nodes' names and outputs suffixed with `suffix(input)`.
 */
function rewireConditioning(
  unet: LoadedModel,
  map: CrossAttentionMap,
  assignments: { node: number; input: string }[],
  suffix: (input: string) => string,
): ModelProto {
  const model = decodeModel(unet.bytes);
  const g = model.graph!;
  const original = g.input.find((i) => i.name === map.conditioningInput);
  if (original === undefined) throw new EditError(`the UNet has no input '${map.conditioningInput}'`);
  for (const input of new Set(assignments.map((a) => a.input))) {
    if (g.input.some((i) => i.name === input)) throw new EditError(`the UNet already has an input '${input}'`);
    g.input.push({ ...original, name: input });
  }
  const producers = new Map<string, number>();
  g.node.forEach((n, i) => n.output.forEach((o) => producers.set(o, i)));
  const castCopies = new Map<string, string>();
  const newNodes: typeof g.node = [];
  for (const { node: nodeIndex, input } of assignments) {
    const node = g.node[nodeIndex]!;
    let src = node.input[0]!;
    if (src === map.conditioningInput) {
      node.input[0] = input;
      continue;
    }
    // A Cast/Identity chain from the conditioning: rebuild the same chain from the new input, once.
    const copyKey = `${input}\u0000${src}`;
    let copy = castCopies.get(copyKey);
    if (copy === undefined) {
      const chain: number[] = [];
      while (src !== map.conditioningInput) {
        const pi = producers.get(src);
        if (pi === undefined) throw new EditError(`cannot trace ${node.name} back to ${map.conditioningInput}`);
        chain.unshift(pi);
        src = g.node[pi]!.input[0]!;
      }
      let prev = input;
      for (const pi of chain) {
        const n = g.node[pi]!;
        const out = `${n.output[0]}${suffix(input)}`;
        newNodes.push({ ...n, name: `${n.name ?? ''}${suffix(input)}`, input: [prev, ...n.input.slice(1)], output: [out] });
        prev = out;
      }
      copy = prev;
      castCopies.set(copyKey, copy);
    }
    node.input[0] = copy;
  }
  g.node.unshift(...newNodes);
  return model;
}

/** Whether a model has any tensor stored as external data. */
export function hasExternalData(model: ModelProto): boolean {
  return allTensors(model.graph!).some((t) => externalDataRef(t) !== undefined);
}

/** What onnxruntime needs to run a rewritten UNet: bytes (plus in-memory external files), or a temp folder path. */
export type UnetSource =
  | { modelBytes: Uint8Array; externalData?: { path: string; data: Uint8Array }[] }
  | { path: string; cleanup: () => void };

function tryLinkedFolder(parent: string, model: ModelProto, originalDir: string, locations: Set<string>): UnetSource | undefined {
  let dir: string | undefined;
  try {
    dir = mkdtempSync(join(parent, '.time-edit-unet-'));
    for (const loc of locations) {
      const target = join(dir, loc);
      makeDirectory(dirname(target));
      linkSync(resolve(originalDir, loc), target); // hard link: onnxruntime refuses symlinks leaving the folder
    }
    saveModel(model, join(dir, 'model.onnx'));
    const made = dir;
    return { path: join(made, 'model.onnx'), cleanup: () => rmSync(made, { recursive: true, force: true }) };
  } catch {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
}

/**
 * Serializes a rewritten UNet for a session. A self-contained model is written (streamed: no second copy of its
 * weights in memory) to a temp folder in the system temp folder, which onnxruntime reads; only if that cannot be
 * written does it go as bytes. A model with external data is written to a temp folder holding hard links to the
 * original external files (in the system temp folder, else next to the original model, which is on the same file
 * system); only if neither works are the external files read into memory and passed as onnxruntime `externalData`.
 * Load a `path` source, then call its `cleanup()`.
 * Example: `const src = await unetSource(await patchUnetWeights(unet, map, edit), unet.dir)`.
 */
export async function unetSource(model: ModelProto, originalDir: string): Promise<UnetSource> {
  if (!hasExternalData(model)) return tryLinkedFolder(tmpdir(), model, originalDir, new Set()) ?? { modelBytes: encodeModel(model) };
  const locations = new Set(
    allTensors(model.graph!)
      .map((t) => externalDataRef(t)?.location)
      .filter((l): l is string => l !== undefined),
  );
  const linked =
    tryLinkedFolder(tmpdir(), model, originalDir, locations) ??
    tryLinkedFolder(dirname(resolve(originalDir)), model, originalDir, locations);
  if (linked !== undefined) return linked;
  const externalData = [...locations].map((loc) => ({ path: loc, data: readFileSync(resolve(originalDir, loc)) }));
  return { modelBytes: encodeModel(model), externalData };
}

/**
 * The conditioning feeds for a batch of text states E ([P·77·d]) under an edit in embedding mode. With `routes`
 * (an edit with layer subsets, on a UNet rewired by routeConditioningUnet), the original input gets E itself and
 * each route's input E transformed by that route's steps.
 */
export function editedConditioning(
  edit: Edit,
  E: Float32Array,
  routes?: ConditioningRoute[],
): { encoderHiddenStates: Float32Array; extraInputs?: Record<string, Float32Array> } {
  if (routes !== undefined) {
    const extraInputs: Record<string, Float32Array> = {};
    for (const r of routes) extraInputs[r.input] = transformRowsBySteps(edit, E, (_, i) => r.steps.includes(i));
    return { encoderHiddenStates: Float32Array.from(E), extraInputs };
  }
  if (!needsSplitConditioning(edit)) return { encoderHiddenStates: transformRows(edit, E, 'v') };
  return { encoderHiddenStates: transformRows(edit, E, 'k'), extraInputs: { [V_INPUT]: transformRows(edit, E, 'v') } };
}

export interface ExportOptions {
  /** Replace an existing output folder. */
  force?: boolean;
  /** Written as edit.json in the folder (prompts, λ, …). */
  description?: unknown;
}

function linkOrCopy(src: string, dst: string): void {
  try {
    linkSync(src, dst);
  } catch {
    copyFileSync(src, dst);
  }
}

function copyTree(src: string, dst: string, skip: (rel: string) => boolean, rel = ''): void {
  makeDirectory(dst);
  for (const name of readdirSync(src)) {
    const r = rel ? `${rel}/${name}` : name;
    if (skip(r)) continue;
    const s = join(src, name);
    const st = statSync(s);
    if (st.isDirectory()) copyTree(s, join(dst, name), skip, r);
    else if (st.isFile()) linkOrCopy(s, join(dst, name));
  }
}

/**
 * Writes an edited pipeline folder: unet/model.onnx with the patched K/V weights embedded, the UNet's external
 * data files and every other file hard-linked (or copied), plus edit.json. Built in a temp folder next to
 * `outDir` and renamed into place, so a failure leaves nothing half-written.
 */
export async function exportEditedPipeline(
  pipelineDir: string,
  unet: LoadedModel,
  edit: Edit,
  outDir: string,
  options: ExportOptions = {},
): Promise<void> {
  const out = resolve(outDir);
  if (existsSync(out) && !options.force) throw new EditError(`${out} already exists (pass force: true to replace it)`);
  const map = findCrossAttention(unet.model.graph!);
  const model = await patchUnetWeights(unet, map, edit);
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    const root = resolve(pipelineDir);
    copyTree(root, tmp, (rel) => rel === 'unet/model.onnx' || [out, tmp].includes(join(root, rel)));
    saveModel(model, join(tmp, 'unet', 'model.onnx'));
    writeFileSync(
      join(tmp, 'edit.json'),
      `${JSON.stringify(options.description ?? { fingerprint: edit.fingerprint, steps: edit.steps.map((s) => ({ pairs: s.pairs, lambda: s.lambda, mode: s.mode, augmentations: s.augmentations, preserve: s.preserve })) }, null, 2)}\n`,
    );
    if (existsSync(out)) rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

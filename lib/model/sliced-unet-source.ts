// A UNet rewritten in memory with query-sliced attention (attention-slicing.ts), as an onnxruntime model
// source: bytes for a self-contained model; for one whose weights are external data, a temp folder in the
// system temp folder holding the rewritten model.onnx and hard links to the original external files (no copy
// of the weights, and nothing is ever written into the model folder). The folder is removed once the session
// has read it.
import { linkSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { sliceAttention, type SlicedAttention, type SlicingReport } from './attention-slicing.js';
import { allTensors, decodeModel, encodeModel, externalDataRef, loadModel, saveModel, type ModelProto } from './onnx/index.js';
import { makeDirectory } from '../fs/make-directory.js';
import type { ModelSource } from './worker-protocol.js';

/** A model source for a session, and what to do once the session is created. */
export interface SlicedSource {
  source: ModelSource;
  /** bytes to hand to the worker instead of copying them */
  transfer: ArrayBuffer[];
  report: SlicingReport;
  cleanup: () => void;
}

function externalLocations(model: ModelProto): Set<string> {
  return new Set(
    allTensors(model.graph!)
      .map((t) => externalDataRef(t)?.location)
      .filter((l): l is string => l !== undefined),
  );
}

function asSource(model: ModelProto, originalDir: string, report: SlicingReport): SlicedSource | undefined {
  const locations = externalLocations(model);
  if (locations.size === 0) {
    const bytes = encodeModel(model);
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    return { source: { modelBytes: bytes }, transfer: own ? [bytes.buffer as ArrayBuffer] : [], report, cleanup: () => undefined };
  }
  let dir: string | undefined;
  try {
    dir = mkdtempSync(join(tmpdir(), 'time-edit-sliced-unet-'));
    for (const loc of locations) {
      const target = join(dir, loc);
      makeDirectory(dirname(target));
      linkSync(resolve(originalDir, loc), target); // hard link: onnxruntime refuses symlinks that leave the folder
    }
    saveModel(model, join(dir, 'model.onnx'));
    const made = dir;
    return {
      source: { path: join(made, 'model.onnx') },
      transfer: [],
      report,
      cleanup: () => rmSync(made, { recursive: true, force: true }),
    };
  } catch {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
}

/**
 * The UNet at `source` with its attention sliced `slices` ways, or undefined when nothing was sliced (slices 1,
 * no attention found, or external weights on another file system than the temp folder): run the original then.
 * Example: `const s = await slicedUnetSource({ path: 'unet/model.onnx' }, 4, 'self')`; load `s.source`, then `s.cleanup()`.
 */
export async function slicedUnetSource(source: ModelSource, slices: number, which: SlicedAttention): Promise<SlicedSource | undefined> {
  if (slices <= 1) return undefined;
  let model: ModelProto;
  let dir: string;
  if ('path' in source) {
    const loaded = await loadModel(source.path);
    model = loaded.model;
    dir = loaded.dir;
  } else {
    if (source.externalData !== undefined && source.externalData.length > 0) return undefined;
    model = decodeModel(source.modelBytes);
    dir = tmpdir();
  }
  const report = sliceAttention(model, slices, which);
  if (report.sliced === 0) return undefined;
  return asSource(model, dir, report);
}

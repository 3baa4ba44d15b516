// The native addon (native/napi, built to time_edit.node): its shape as TypeScript sees it, typed once here, and
// the one place it is loaded. Everything else in lib/solver/ calls `addon()`; nothing else `require`s the binary.
// Where the file is found (TIME_EDIT_ADDON, the source build, a prebuilt) is addon-location.ts's job.
//
// The functions mirror native/napi: arrays are Float32Array views the addon reads or writes in place, `null`
// where an output is not wanted, and every heavy call runs on a worker thread and resolves a Promise.
import { createRequire } from 'node:module';
import { locateAddon } from './addon-location.js';
import type { BackendKind } from './types.js';

/** What the build and the machine offer, as the addon reports it. */
export interface AddonBackendInfo {
  /** Name of the default CPU backend, e.g. "cpu-openblas". */
  cpu: string;
  /** Name of the portable (no-BLAS) CPU backend. */
  cpuPortable: string;
  /** Whether the default CPU backend uses BLAS (then the portable one is a separate, slower choice). */
  hasBlas: boolean;
  /** Whether the addon was compiled with the CUDA backend. */
  cudaBuilt: boolean;
  /** CUDA devices visible now (0 without CUDA). */
  cudaDevices: number;
}

/** An optional output buffer: `null` when that result is not wanted. */
export type MaybeF32 = Float32Array | null;

/** The binding's exports (native/napi/addon.cpp `Init`). */
export interface Addon {
  backendInfo(): AddonBackendInfo;
  solve(
    backend: BackendKind,
    d: number,
    sources: Float32Array[],
    destinations: Float32Array[],
    lambdas: number[],
    outD: MaybeF32[],
    outG: MaybeF32[],
    outM: MaybeF32[],
    weights: MaybeF32,
    patched: Float32Array[],
  ): Promise<string>;
  patchDense(backend: BackendKind, d: number, dense: Float32Array[], weights: Float32Array, patched: Float32Array[]): Promise<string>;
  applyLowRank(backend: BackendKind, d: number, rows: Float32Array, A: Float32Array, B: Float32Array, out: Float32Array): Promise<void>;
  applyDense(backend: BackendKind, d: number, rows: Float32Array, M: Float32Array, transpose: boolean, out: Float32Array): Promise<void>;
  sgemm(backend: BackendKind, m: number, n: number, k: number, A: Float32Array, B: Float32Array, C: Float32Array): Promise<void>;
  baseline(
    backend: BackendKind,
    d: number,
    source: Float32Array,
    destination: Float32Array,
    lambda: number,
    weights: Float32Array,
    layerRows: number[],
    out: Float32Array,
  ): Promise<void>;
  getThreads(backend: BackendKind): number;
  setThreads(backend: BackendKind, threads: number): void;
}

let loaded: Addon | undefined;

/**
 * The loaded addon, loaded on first use; throws locateAddon's Error (the paths tried, how to build) when there is none.
 *
 * @example
 *   addon().backendInfo();   // { cpu: 'cpu-openblas', cpuPortable: 'cpu-portable (no BLAS: slower)', hasBlas: true, … }
 */
export function addon(): Addon {
  if (loaded === undefined) {
    loaded = createRequire(import.meta.url)(locateAddon()) as Addon;
  }
  return loaded;
}

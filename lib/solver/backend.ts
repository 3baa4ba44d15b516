// Which backend runs the solver: the CPU one (OpenBLAS + LAPACKE when the build found them), the portable CPU
// kernels, or CUDA when the addon was built with it and a device is visible. The choice is $TIME_EDIT_BACKEND when
// set, else CUDA when available, else the CPU; a backend asked for by name is checked against this build and
// machine before any work starts. Also the CPU backend's BLAS thread count, and probes for callers that fall
// back to TypeScript when the addon is not there.
import { addon, type AddonBackendInfo } from './addon.js';
import { checkInteger, describe } from './checks.js';
import type { BackendChoice, BackendKind } from './types.js';

export type { BackendChoice, BackendKind } from './types.js';

/** The environment variable that picks the backend (cpu | cpu-portable | cuda). */
export const BACKEND_ENV = 'TIME_EDIT_BACKEND';

/**
 * Every backend this build and machine can run: the CPU one(s), and CUDA when built and a device is present.
 *
 * @example
 *   availableBackends();   // [{ kind: 'cpu', name: 'cpu-openblas' }, { kind: 'cpu-portable', name: 'cpu-portable (no BLAS: slower)' }]
 */
export function availableBackends(): BackendChoice[] {
  const info = addon().backendInfo();
  const list: BackendChoice[] = [{ kind: 'cpu', name: info.cpu }];
  if (info.hasBlas) list.push({ kind: 'cpu-portable', name: info.cpuPortable });
  if (info.cudaBuilt && info.cudaDevices > 0) list.push({ kind: 'cuda', name: 'cuda' });
  return list;
}

/**
 * The backend in use: $TIME_EDIT_BACKEND (cpu | cpu-portable | cuda) if set, else cuda when available, else cpu.
 *
 * @example
 *   solverBackend();   // { kind: 'cpu', name: 'cpu-openblas' }
 */
export function solverBackend(): BackendChoice {
  const info = addon().backendInfo();
  const wanted = process.env[BACKEND_ENV];
  if (wanted === undefined || wanted === '') {
    return info.cudaBuilt && info.cudaDevices > 0 ? { kind: 'cuda', name: 'cuda' } : { kind: 'cpu', name: info.cpu };
  }
  return checkBackend(wanted, info, BACKEND_ENV);
}

function checkBackend(wanted: string, info: AddonBackendInfo, source: string): BackendChoice {
  switch (wanted) {
    case 'cpu':
      return { kind: 'cpu', name: info.cpu };
    case 'cpu-portable':
      return { kind: 'cpu-portable', name: info.cpuPortable };
    case 'cuda':
      if (!info.cudaBuilt) {
        throw new Error(
          `${source}=cuda, but this build of time-edit has no CUDA backend (rebuild with the CUDA toolkit installed); use cpu`,
        );
      }
      if (info.cudaDevices === 0) throw new Error(`${source}=cuda, but no CUDA device is visible on this machine; use cpu`);
      return { kind: 'cuda', name: 'cuda' };
    default:
      throw new RangeError(`${source} must be one of cpu, cpu-portable, cuda; got '${wanted}'`);
  }
}

/**
 * Checks that a backend asked for by name (an option, a config value) is usable here; `source` names it in the
 * error: a RangeError for an unknown name, an Error for one this build or machine cannot run.
 *
 * @example
 *   backendFor('cpu');                // { kind: 'cpu', name: 'cpu-openblas' }
 *   backendFor('tpu', 'opts.backend'); // RangeError: opts.backend must be one of cpu, cpu-portable, cuda; got 'tpu'
 */
export function backendFor(kind: string, source = 'backend'): BackendChoice {
  return checkBackend(kind, addon().backendInfo(), source);
}

/** The backend an API call runs on: the caller's `backend` option when given (checked, named `argName`), else solverBackend(). */
export function resolveBackend(backend: BackendKind | undefined, argName: string): BackendChoice {
  if (backend === undefined) return solverBackend();
  if (typeof backend !== 'string') throw new TypeError(`${argName} must be 'cpu', 'cpu-portable' or 'cuda'`);
  return checkBackend(backend, addon().backendInfo(), argName);
}

/**
 * A CPU backend asked for by name, for the calls that run only on the CPU (denseOf): a TypeError for a value that
 * is not a string, a RangeError for any other name ('cuda' included).
 *
 * @example
 *   cpuBackendArg('cuda', 'backend');   // RangeError: backend must be 'cpu' or 'cpu-portable' (denseOf runs on the CPU), got 'cuda'
 */
export function cpuBackendArg(backend: unknown, argName: string): 'cpu' | 'cpu-portable' {
  if (backend === 'cpu' || backend === 'cpu-portable') return backend;
  if (typeof backend !== 'string') throw new TypeError(`${argName} must be 'cpu' or 'cpu-portable', got ${describe(backend)}`);
  throw new RangeError(`${argName} must be 'cpu' or 'cpu-portable' (denseOf runs on the CPU), got '${backend}'`);
}

/** The CPU backend that does a backend's CPU-side work (CUDA pairs with the default CPU backend). */
export function cpuKind(b: BackendChoice): 'cpu' | 'cpu-portable' {
  return b.kind === 'cpu-portable' ? 'cpu-portable' : 'cpu';
}

/** The name the addon gives a CPU backend, e.g. "cpu-openblas". */
export function cpuBackendName(kind: 'cpu' | 'cpu-portable'): string {
  const info = addon().backendInfo();
  return kind === 'cpu' ? info.cpu : info.cpuPortable;
}

/**
 * Whether the native addon is built and loads on this machine.
 *
 * @example
 *   addonAvailable();   // true after `npm install` built it; false in a checkout where it was never built
 */
export function addonAvailable(): boolean {
  try {
    addon();
    return true;
  } catch {
    return false;
  }
}

/**
 * What solverBackend() picks, or undefined where it would throw (the addon is not built or does not load, or
 * $TIME_EDIT_BACKEND names a backend not usable here): for callers that then use their TypeScript path instead.
 *
 * @example
 *   trySolverBackend()?.name ?? 'typescript';   // 'cpu-openblas'
 */
export function trySolverBackend(): BackendChoice | undefined {
  try {
    return solverBackend();
  } catch {
    return undefined;
  }
}

/**
 * BLAS threads of the CPU backend (OpenBLAS: openblas_get_num_threads; OPENBLAS_NUM_THREADS sets the default).
 *
 * @example
 *   solverThreads();   // 2 on a two-core machine with OpenBLAS's default
 */
export function solverThreads(backend: 'cpu' | 'cpu-portable' = 'cpu'): number {
  return addon().getThreads(backend);
}

/**
 * Sets the CPU backend's BLAS threads (waits for running native work to finish first).
 *
 * @example
 *   setSolverThreads(1);   // solverThreads() → 1
 */
export function setSolverThreads(threads: number, backend: 'cpu' | 'cpu-portable' = 'cpu'): void {
  checkInteger(threads, 'threads', 1);
  addon().setThreads(backend, threads);
}

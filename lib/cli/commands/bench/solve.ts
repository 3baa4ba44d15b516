// `time-edit bench solve`: the native TIME solver on Stable Diffusion 1.x shapes (d = 768, the 16 cross-attention
// layers' K and V stacked: R = 24,960 rows, n = 77 × 4 = 308 aligned rows, λ = 0.1, seeded random data), against a
// plain SGEMM of the patched-weights size (the floor) and a port of the paper's per-layer algorithm (the baseline),
// all in the same run, with each result's relative error against a float64 reference.
import { existsSync, statSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { UsageError } from '../../errors.js';
import { FLAG_LIMITS } from '../../sampling-flags.js';
import { writeFileAtomicSync } from '../../../fs/durable-file.js';
import { backendFor, setSolverThreads, solverBackend, solverThreads, type BackendChoice } from '../../../solver/backend.js';
import { benchNative } from '../../../solver/bench.js';
import { patchWeights, solveEdits, type EditInput } from '../../../solver/native.js';
import { referenceG, referenceM, referenceRows, relativeError } from '../../../solver/reference.js';

// diffusers SD 1.x UNet: attn2 to_k/to_v output widths of the 16 transformer blocks (down, mid, up).
const SD1_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320];

const HELP = `usage: time-edit bench solve [options]

Times the native TIME solve on SD 1.x shapes (d=768, n=308, 32 K/V matrices = 24,960 x 768 weights, lambda=0.1):
  (a) one edit in low-rank form (D, G)     (b) one edit as a dense 768 x 768 M
  (c) patched weights W' = W.M, all 32     (d) a batch of edits (edits/s)
  (e) one plain SGEMM W.M (the floor)      (f) the paper's per-layer algorithm (float32 Gram + inverse per layer)
and reports median/min/max, ratios from the same run, each result's relative error vs a float64 reference,
and the peak memory of (c) relative to the weights' size.

options:
  --repeats N           timed repeats of (a)-(e) (default 7; the millisecond ones, (a) and (b), run at least 60 times)
  --baseline-repeats N  timed repeats of (f) (default 3)
  --batch N             edits in (d) (default 64)
  --threads N           BLAS threads (default: OpenBLAS's own, i.e. OPENBLAS_NUM_THREADS or all cores)
  --backend KIND        cpu | cpu-portable | cuda (default: TIME_EDIT_BACKEND, else cuda if present, else cpu)
  --seed N              random data seed (default 1)
  --json FILE           also write the numbers to FILE (JSON)`;

interface Timing {
  medianMs: number;
  minMs: number;
  maxMs: number;
}

// Runs the given functions in turn, `repeats` rounds (after one warm-up round), so that every function sees the
// same background load: on a shared machine the ratios between them stay meaningful even when absolute times drift.
async function timeInterleaved(repeats: number, fns: (() => Promise<unknown>)[]): Promise<Timing[]> {
  // Warm-up: first touch of outputs, BLAS thread start-up, CPU clocks ramping up. One round is not enough for
  // millisecond calls (measured: the median of 21 calls after one warm-up call was 20% above the steady state),
  // so rounds repeat until 250 ms have passed.
  const warmUpStart = performance.now();
  do {
    for (const fn of fns) await fn();
  } while (performance.now() - warmUpStart < 250);
  const samples: number[][] = fns.map(() => []);
  for (let i = 0; i < repeats; i++) {
    for (const [k, fn] of fns.entries()) {
      const t0 = performance.now();
      await fn();
      samples[k]!.push(performance.now() - t0);
    }
  }
  return samples.map((list) => {
    list.sort((a, b) => a - b);
    const mid = Math.floor(list.length / 2);
    const median = list.length % 2 === 1 ? list[mid]! : (list[mid - 1]! + list[mid]!) / 2;
    return { medianMs: median, minMs: list[0]!, maxMs: list[list.length - 1]! };
  });
}

async function timeIt(repeats: number, fn: () => Promise<unknown>): Promise<Timing> {
  return (await timeInterleaved(repeats, [fn]))[0]!;
}

// Seeded normal samples (mulberry32 + Box-Muller): the same data for the same seed on every machine.
function normals(seed: number): (out: Float32Array, scale: number) => Float32Array {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return (out, scale) => {
    for (let i = 0; i < out.length; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
    return out;
  };
}

function positiveInt(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer, got '${value}'`);
  const max = FLAG_LIMITS[flag];
  if (max !== undefined && n > max) throw new UsageError(`${flag} must be at most ${max}, got ${n}`);
  return n;
}

const fmt = (ms: number): string => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));
const row = (label: string, t: Timing, extra = ''): string =>
  `  ${label.padEnd(44)} ${fmt(t.medianMs).padStart(8)} ${fmt(t.minMs).padStart(8)} ${fmt(t.maxMs).padStart(8)}   ${extra}`;

interface BenchSettings {
  repeats: number;
  baselineRepeats: number;
  batchSize: number;
  seed: number;
  backend: BackendChoice;
  cpuKind: 'cpu' | 'cpu-portable';
  jsonPath: string | undefined;
}

/** The flags, checked; undefined for --help. Sets the BLAS threads when --threads is given. */
function parseFlags(args: string[]): BenchSettings | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        repeats: { type: 'string' },
        'baseline-repeats': { type: 'string' },
        batch: { type: 'string' },
        threads: { type: 'string' },
        backend: { type: 'string' },
        seed: { type: 'string' },
        json: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    throw new UsageError(`bench solve: ${(err as Error).message} (see --help)`);
  }
  const v = parsed.values;
  if (v.help) {
    console.log(HELP);
    return undefined;
  }
  const repeats = positiveInt(v.repeats, '--repeats', 7);
  const baselineRepeats = positiveInt(v['baseline-repeats'], '--baseline-repeats', 3);
  const batchSize = positiveInt(v.batch, '--batch', 64);
  const seed = positiveInt(v.seed, '--seed', 1);
  let backend: BackendChoice;
  if (v.backend !== undefined) {
    if (!['cpu', 'cpu-portable', 'cuda'].includes(v.backend))
      throw new UsageError(`--backend must be cpu, cpu-portable or cuda, got '${v.backend}'`);
    // A backend that is not available here is not a usage error: the work cannot be done (exit 1).
    backend = backendFor(v.backend, '--backend');
  } else {
    backend = solverBackend();
  }
  const cpuKind = backend.kind === 'cpu-portable' ? 'cpu-portable' : 'cpu';
  if (v.threads !== undefined) setSolverThreads(positiveInt(v.threads, '--threads', 1), cpuKind);
  const jsonPath = v.json !== undefined ? resolve(v.json) : undefined;
  if (jsonPath !== undefined && !(existsSync(dirname(jsonPath)) && statSync(dirname(jsonPath)).isDirectory())) {
    throw new UsageError(`--json: folder ${dirname(jsonPath)} does not exist`);
  }
  return { repeats, baselineRepeats, batchSize, seed, backend, cpuKind, jsonPath };
}

/** SD 1.x shapes and seeded data: one edit (C, C*) and the 32 stacked K/V weights. */
interface Problem {
  d: number;
  n: number;
  lambda: number;
  layerRows: number[];
  R: number;
  rnd: (out: Float32Array, scale: number) => Float32Array;
  edit: Required<Pick<EditInput, 'source' | 'destination' | 'lambda'>>;
}

function makeProblem(seed: number): Problem {
  const d = 768;
  const n = 77 * 4;
  const lambda = 0.1;
  const layerRows = SD1_WIDTHS.flatMap((w) => [w, w]); // K and V of each layer
  const R = layerRows.reduce((a, b) => a + b, 0);
  const rnd = normals(seed);
  // CLIP-like scale: entries ~ N(0, 1), i.e. row norms ≈ √768 ≈ 28; destinations move every row a little.
  const C = rnd(new Float32Array(n * d), 1);
  const Cs = rnd(new Float32Array(n * d), 0.3).map((x, i) => x + C[i]!);
  return { d, n, lambda, layerRows, R, rnd, edit: { source: C, destination: Cs, lambda } };
}

function printHeader(s: BenchSettings, p: Problem): void {
  console.log(
    `time-edit bench solve: backend ${s.backend.name}, BLAS threads ${solverThreads(s.cpuKind)}, ${cpus().length} CPUs ` +
      `(load average ${loadavg()[0]!.toFixed(2)}; other processes share them: compare ratios from this run)`,
  );
  if (solverThreads(s.cpuKind) > 1 && loadavg()[0]! >= 1) {
    console.log(`note: other processes keep the CPUs busy; multi-threaded BLAS can then be slower than --threads 1`);
  }
  console.log(
    `shapes: d=${p.d}, n=${p.n}, λ=${p.lambda}, weights ${p.R} x ${p.d} (${((p.R * p.d * 4) / 1e6).toFixed(1)} MB, 32 matrices), seed ${s.seed}`,
  );
}

/** Peak memory of the patched solve, measured first so earlier work does not hide its high-water mark. */
async function measurePatchedPeakMemory(p: Problem) {
  const rssBefore = process.memoryUsage().rss;
  const W = p.rnd(new Float32Array(p.R * p.d), 0.03);
  const weights = { data: W, rows: p.R };
  const [first] = await solveEdits(p.d, [p.edit], { lowRank: false, weights });
  const peakBytes = process.resourceUsage().maxRSS * 1024 - rssBefore;
  return { W, weights, patched: first!.patched!, peakBytes, weightBytes: W.byteLength, peakMemoryRatio: peakBytes / W.byteLength };
}

/** (a) one edit in low-rank form, with reused and with fresh output arrays; (b) one edit as a dense M. */
async function measureSingleEdit(s: BenchSettings, p: Problem) {
  const { d, n, edit } = p;
  const kind = s.backend.kind;
  // (a) and (b) write into reused output buffers (opts.out); (a) is also timed with fresh arrays, whose first
  // touch (page faults) is part of what a caller that does not reuse buffers pays. The two are timed one after
  // the other, not interleaved: the fresh arrays' allocations and page faults would otherwise evict the reused
  // buffers from the caches and bill (a) for the other variant's costs.
  const lowRankOut = { D: new Float32Array(n * d), G: new Float32Array(n * d) };
  // Millisecond calls get more samples: their medians over 7-21 calls were 5-15% above those over 60+ here.
  const fastRepeats = Math.max(s.repeats, 60);
  const lowRank = await timeIt(fastRepeats, () => solveEdits(d, [edit], { lowRank: true, backend: kind, out: [lowRankOut] }));
  const lowRankFresh = await timeIt(fastRepeats, () => solveEdits(d, [edit], { lowRank: true, backend: kind }));
  console.log(row('(a) one edit, low-rank form (D, G)', lowRank));
  console.log(row('    same, fresh output arrays every call', lowRankFresh));
  const denseOut = { dense: new Float32Array(d * d) };
  const dense = await timeIt(fastRepeats, () => solveEdits(d, [edit], { lowRank: false, dense: true, backend: kind, out: [denseOut] }));
  console.log(row('(b) one edit, dense M (768 x 768)', dense));
  return { lowRank, lowRankFresh, dense, lowRankOut };
}

/** (c) patched weights and (e) the SGEMM floor, interleaved (same background load); M comes from the solver. */
async function measurePatchedAndFloor(s: BenchSettings, p: Problem, mem: Awaited<ReturnType<typeof measurePatchedPeakMemory>>) {
  const { d, edit, R } = p;
  const kind = s.backend.kind;
  const [denseEdit] = await solveEdits(d, [edit], { lowRank: false, dense: true, backend: kind });
  const M = denseEdit!.dense!;
  const floorOut = new Float32Array(R * d);
  const floorFn =
    kind === 'cuda'
      ? () => patchWeights(mem.weights, { d, dense: M }, { out: floorOut, backend: 'cuda' })
      : () => benchNative.sgemm(s.cpuKind, R, d, d, mem.W, M, floorOut);
  const [patchedT, floor] = (await timeInterleaved(s.repeats, [
    () => solveEdits(d, [edit], { lowRank: false, weights: mem.weights, out: [{ patched: mem.patched }], backend: kind }),
    floorFn,
  ])) as [Timing, Timing];
  console.log(row('(c) patched weights, all 32 matrices', patchedT));
  return { M, floorOut, patchedT, floor };
}

/** (d) a batch of edits in low-rank form (edits/s). */
async function measureBatch(s: BenchSettings, p: Problem) {
  const { d, n, edit, lambda, rnd } = p;
  const batchEdits: EditInput[] = [{ ...edit }];
  for (let b = 1; b < s.batchSize; b++) {
    const src = rnd(new Float32Array(n * d), 1);
    batchEdits.push({ source: src, destination: rnd(new Float32Array(n * d), 0.3).map((x, i) => x + src[i]!), lambda });
  }
  let batchResult: Awaited<ReturnType<typeof solveEdits>> = [];
  const batchOut = batchEdits.map(() => ({ D: new Float32Array(n * d), G: new Float32Array(n * d) }));
  const batch = await timeIt(s.repeats, async () => {
    batchResult = await solveEdits(d, batchEdits, { lowRank: true, backend: s.backend.kind, out: batchOut });
  });
  const batchEditsPerSec = s.batchSize / (batch.medianMs / 1000);
  console.log(row(`(d) batch of ${s.batchSize} edits, low-rank form`, batch, `${batchEditsPerSec.toFixed(0)} edits/s`));
  return { batch, batchEditsPerSec, firstG: batchResult[0]!.lowRank!.G };
}

/** (f) the paper's per-layer algorithm, interleaved with more runs of (c) so the speed-up compares runs under the same load. */
async function measureBaseline(s: BenchSettings, p: Problem, mem: Awaited<ReturnType<typeof measurePatchedPeakMemory>>) {
  const baselineOut = new Float32Array(p.R * p.d);
  const [baseline, patchedAlongside] = (await timeInterleaved(s.baselineRepeats, [
    () => benchNative.baseline(s.cpuKind, p.d, p.edit, mem.W, p.layerRows, baselineOut),
    () => solveEdits(p.d, [p.edit], { lowRank: false, weights: mem.weights, out: [{ patched: mem.patched }], backend: s.backend.kind }),
  ])) as [Timing, Timing];
  console.log(row('(f) paper port: per-layer Gram + fp32 inverse x32', baseline));
  return { baseline, patchedAlongside, baselineOut };
}

export async function run(args: string[]): Promise<void> {
  const s = parseFlags(args);
  if (s === undefined) return;
  const p = makeProblem(s.seed);
  const { d, n, lambda, R, layerRows } = p;
  const C = p.edit.source;
  const Cs = p.edit.destination;
  printHeader(s, p);

  const mem = await measurePatchedPeakMemory(p);
  console.log(`\n  ${'(median / min / max, ms)'.padEnd(44)} ${'median'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
  const { lowRank, lowRankFresh, dense, lowRankOut } = await measureSingleEdit(s, p);
  const { M, floorOut, patchedT, floor } = await measurePatchedAndFloor(s, p, mem);
  const { batch, batchEditsPerSec, firstG } = await measureBatch(s, p);
  console.log(row('(e) one SGEMM W·M (floor)', floor));
  const { baseline, patchedAlongside, baselineOut } = await measureBaseline(s, p, mem);

  // Errors against the float64 reference (G and M in full; W' on rows sampled across all 32 matrices).
  const G64 = referenceG(C, n, d, lambda);
  const M64 = referenceM(C, Cs, G64, n, d);
  const sample = Array.from({ length: 128 }, (_, k) => Math.floor((k * R) / 128 + 37) % R);
  const W64 = referenceRows(mem.W, M64, d, sample);
  const errors = {
    lowRank: relativeError(lowRankOut.G, G64),
    dense: relativeError(M, M64),
    patched: relativeError(mem.patched, W64, d, sample),
    batch: relativeError(firstG, G64),
    floor: relativeError(floorOut, W64, d, sample),
    baseline: relativeError(baselineOut, W64, d, sample),
  };
  const maxRelErrorVsFloat64 = Math.max(errors.lowRank, errors.dense, errors.patched, errors.batch);
  const { peakBytes, weightBytes, peakMemoryRatio } = mem;

  const patchedOverFloor = patchedT.medianMs / floor.medianMs;
  const baselineOverPatched = baseline.medianMs / patchedAlongside.medianMs;
  console.log(
    `
ratios (medians, same run):
  (c) patched / (e) SGEMM floor           ${patchedOverFloor.toFixed(3)}x   (target ≤ 1.2x)
  (f) baseline / (c) patched              ${baselineOverPatched.toFixed(1)}x speed-up of the one-GEMM solve (interleaved runs)
  (a) low-rank edit                       ${fmt(lowRank.medianMs)} ms   (target ≤ 5 ms)
relative Frobenius error vs float64 (target ≤ 1e-6 for W'):
  (a) G ${errors.lowRank.toExponential(2)}   (b) M ${errors.dense.toExponential(2)}   (c) W' ${errors.patched.toExponential(2)}   ` +
      `(d) batch G ${errors.batch.toExponential(2)}
  (e) floor W·M(fp32) ${errors.floor.toExponential(2)}   (f) baseline W' ${errors.baseline.toExponential(2)} (float32 inverse)
peak memory of the patched solve: ${(peakBytes / 1e6).toFixed(0)} MB RSS growth = ${peakMemoryRatio.toFixed(2)}x the weights ` +
      `(${(weightBytes / 1e6).toFixed(1)} MB; includes W itself, W' and BLAS buffers; target ≤ 3x)`,
  );

  const jsonPath = s.jsonPath;
  if (jsonPath !== undefined) {
    const report = {
      backend: s.backend.name,
      lowRankMedianMs: lowRank.medianMs,
      lowRankFreshOutputsMedianMs: lowRankFresh.medianMs,
      denseMedianMs: dense.medianMs,
      patchedMedianMs: patchedT.medianMs,
      sgemmFloorMedianMs: floor.medianMs,
      baselineMedianMs: baseline.medianMs,
      batchEditsPerSec,
      maxRelErrorVsFloat64,
      timings: { lowRank, lowRankFreshOutputs: lowRankFresh, dense, patched: patchedT, batch, sgemmFloor: floor, baseline },
      ratios: { patchedOverFloor, baselineOverPatched },
      relErrorVsFloat64: errors,
      peakMemoryRatio,
      peakMemoryBytes: peakBytes,
      weightBytes,
      shapes: { d, n, lambda, rows: R, matrices: layerRows.length, batch: s.batchSize },
      threads: solverThreads(s.cpuKind),
      repeats: s.repeats,
      baselineRepeats: s.baselineRepeats,
      seed: s.seed,
      host: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', loadAverage1m: loadavg()[0] },
      date: new Date().toISOString(),
    };
    try {
      writeFileAtomicSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
    } catch (err) {
      throw new UsageError(`--json: ${(err as Error).message}; is ${dirname(jsonPath)} a writable folder?`);
    }
    console.log(`wrote ${jsonPath}`);
  }
}

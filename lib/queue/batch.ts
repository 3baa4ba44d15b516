// `edit --batch` through the queue: the same run on --out as lib/edit/batch.ts (BatchRun: the lock, the resume rules,
// results.jsonl, the edit files and their names), with each chunk of lines computed by a worker instead of here.
// Chunks are fixed slices of the file's lines (32 per chunk, the local run's size), reduced to the lines still to do,
// so that a fresh run has the local run's chunks and a rerun after a kill makes the jobs it made before (same ids).
// A chunk whose job failed (a payload a worker refused, a job that failed twice) gives each of its lines an error row
// with the reason; a rerun retries them, as it retries any failed line.
import { existsSync } from 'node:fs';
import type { BatchOptions, BatchReport, BatchLine } from '../edit/batch.js';
import { EditError } from '../edit/edit.js';
import { BatchRun, lineKey } from '../edit/batch.js';
import { openEditContext } from '../edit/context.js';
import { loadPipeline } from '../model/pipeline.js';
import { checkBatchResult } from './job-results.js';
import { PAYLOAD_FORMAT, type BatchJob } from './payload.js';
import { Submission, type FinishedJob, type QueueTarget } from './submission.js';

/** The lines to do in fixed chunks of the file: slices of `lines` of `size`, each reduced to the lines in `todo`. */
function fixedChunks(lines: readonly BatchLine[], todo: readonly BatchLine[], size: number): BatchLine[][] {
  const want = new Set(todo.map((l) => l.line));
  const out: BatchLine[][] = [];
  for (let c = 0; c < lines.length; c += size) {
    const chunk = lines.slice(c, c + size).filter((l) => want.has(l.line));
    if (chunk.length > 0) out.push(chunk);
  }
  return out;
}

/**
 * Runs a batch file through the queue: the model folder of `options.model` (default: the embedded one) is read here
 * only for its fingerprint, which names the queue; workers serving that model compute the chunks; --out is written as
 * runBatch writes it. Example:
 * `const r = await runBatchOnQueue({ url: 'redis://127.0.0.1:6379' }, 'edits.jsonl', 'out/batch', {}); r.ok`.
 */
export async function runBatchOnQueue(target: QueueTarget, file: string, outDir: string, options: BatchOptions = {}): Promise<BatchReport> {
  if (!existsSync(file)) throw new EditError(`batch file ${file} does not exist`);
  const pipeline = await loadPipeline(options.model, { device: options.device, threads: options.threads });
  let fingerprint: string;
  let layers: number;
  try {
    const ctx = await openEditContext(pipeline);
    fingerprint = ctx.fingerprint;
    layers = ctx.map.layers.length;
  } finally {
    await pipeline.close();
  }
  const submission = await Submission.open(target, fingerprint);
  try {
    const run = await BatchRun.open(fingerprint, file, outDir, options);
    try {
      const defaults = options.defaults ?? {};
      const chunks = fixedChunks(run.lines, run.todo, options.chunk ?? 32);
      const jobOf = (lines: BatchLine[]): BatchJob => ({ kind: 'batch', format: PAYLOAD_FORMAT, fingerprint, defaults, lines });
      const jobs = chunks.map(jobOf);
      // Chunks done already whose jobs a killed submitter wrote but did not remove: removed now (with their
      // artifacts). Their ids are those of a first run's chunks (every line of the chunk to do).
      const todo = new Set(run.todo.map((l) => l.line));
      const doneChunks = fixedChunks(run.lines, run.lines, options.chunk ?? 32).filter((c) => c.every((l) => !todo.has(l.line)));
      await submission.releaseWritten(doneChunks.map(jobOf));
      let processed = 0;
      options.onProgress?.(0, run.todo.length);
      await submission.run(jobs, async (f: FinishedJob) => {
        const lines = (f.data as BatchJob).lines;
        if (f.failedReason !== undefined) {
          const error = `the queue job for this line failed: ${f.failedReason}`;
          await run.write({
            errors: lines.map((l) => ({ line: l.line, key: lineKey(l.text), status: 'error', error })),
            edits: [],
            solveMs: 0,
            solver: '',
          });
        } else {
          const r = checkBatchResult(
            f.value,
            lines.map((l) => l.line),
          );
          const bytes = await submission.artifacts(r.edits.map((e) => e.artifact)); // one round trip per job
          const edits = r.edits.map((e, i) => ({ row: e.row, data: bytes[i]! }));
          await run.write({ errors: r.errors, edits, solveMs: r.solveMs, solver: r.solver });
        }
        processed += lines.length;
        options.onProgress?.(processed, run.todo.length);
        return [f];
      });
      const s = run.finish();
      return { ...s, results: run.resultsPath, layers };
    } finally {
      run.close();
    }
  } finally {
    await submission.close();
  }
}

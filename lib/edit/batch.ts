// `edit --batch EDITS.jsonl --out DIR`: one edit per JSONL line, for servers that compute many edits.
// Lines are processed in chunks: every prompt of a chunk is encoded in one text-encoder pass and every edit of a
// chunk is solved in one batched native call. Each line gets an edit file (DIR/edits/line-NNNNN.safetensors) and
// one row in DIR/results.jsonl (status, timings, layers edited, or the error). A bad line does not stop the
// others. Reruns are resumable: a line whose row (same line number, same text) is already in results.jsonl is
// skipped; rows are appended only after their edit file is in place, a torn last row is dropped on restart, and
// rows of lines that changed are discarded, so nothing is lost or duplicated.
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../cli-errors.js';
import { loadPipeline } from '../model/pipeline.js';
import { writeFileAtomic } from './safetensors.js';
import { assembleRows, planRows, type EditRequest, type RowPlan } from './compute.js';
import { EditError, type Edit } from './edit.js';
import { saveEdit } from './edit-file.js';
import { DEFAULT_AUGMENTATIONS } from './augment.js';
import { openEditContext, type EditContext } from './session.js';
import { defaultSolver, type EditSolver } from './solve.js';

export interface BatchOptions {
  model?: string;
  device?: 'cpu' | 'cuda';
  threads?: number;
  /** Lines per chunk (one encode pass and one batched solve each); default 32. */
  chunk?: number;
  /** Quiet: no progress bar, no summary on stderr. */
  quiet?: boolean;
}

export interface BatchRow {
  line: number;
  key: string;
  status: 'ok' | 'error';
  file?: string;
  error?: string;
  source?: string;
  destination?: string;
  lambda?: number;
  onlyV?: boolean;
  rows?: number;
  layers?: number;
  encodeMs?: number;
  solveMs?: number;
  warnings?: string[];
}

export interface BatchSummary {
  total: number;
  skipped: number;
  ok: number;
  errors: number;
  seconds: number;
  solveSeconds: number;
  editsPerSecond: number;
  solverEditsPerSecond: number;
  solver: string;
}

function lineKey(text: string): string {
  return createHash('sha1').update(text).digest('hex').slice(0, 16);
}

/** Parses one JSONL line into an edit request; throws EditError with a clear message. */
export function parseBatchLine(text: string): EditRequest & { onlyV: boolean } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new EditError(`not valid JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new EditError('a line must be a JSON object');
  const o = v as Record<string, unknown>;
  const source = o['source'];
  const destination = o['destination'] ?? o['dest'];
  if (typeof source !== 'string' || typeof destination !== 'string') throw new EditError('"source" and "destination" must be strings');
  const lambda = o['lambda'] ?? 0.1;
  if (typeof lambda !== 'number') throw new EditError('"lambda" must be a number');
  const aug = o['augmentations'];
  let augmentations: string[];
  if (aug === undefined || aug === true) augmentations = [...DEFAULT_AUGMENTATIONS];
  else if (aug === false) augmentations = [];
  else if (Array.isArray(aug) && aug.every((a) => typeof a === 'string')) augmentations = aug as string[];
  else throw new EditError('"augmentations" must be true, false or a list of strings');
  const onlyV = o['onlyV'] ?? o['only_v'] ?? o['only-v'] ?? false;
  if (typeof onlyV !== 'boolean') throw new EditError('"onlyV" must be a boolean');
  const preserve = o['preserve'] ?? [];
  if (!Array.isArray(preserve) || !preserve.every((p) => typeof p === 'string')) throw new EditError('"preserve" must be a list of strings');
  return { pairs: [{ source, destination }], lambda, augmentations, mode: onlyV ? 'v' : 'kv', preserve: preserve as string[], onlyV };
}

/** Reads existing rows, dropping a torn last line and rows whose line text changed. */
function loadDone(resultsPath: string, keys: Map<number, string>): Map<number, BatchRow> {
  const done = new Map<number, BatchRow>();
  if (!existsSync(resultsPath)) return done;
  const text = readFileSync(resultsPath, 'utf8');
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let row: BatchRow;
    try {
      row = JSON.parse(line) as BatchRow;
    } catch {
      continue; // a row torn by a crash: its line is redone
    }
    if (keys.get(row.line) === row.key) done.set(row.line, row);
  }
  // Rewrite compactly so that dropped rows do not linger (atomic).
  writeFileAtomic(resultsPath, new TextEncoder().encode([...done.values()].sort((a, b) => a.line - b.line).map((r) => JSON.stringify(r) + '\n').join('')));
  return done;
}

function progress(done: number, total: number, t0: number): void {
  if (process.stderr.isTTY !== true) return;
  const width = 30;
  const fill = total === 0 ? width : Math.round((done / total) * width);
  const rate = done / Math.max(1e-9, (performance.now() - t0) / 1000);
  process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${total} lines, ${rate.toFixed(1)} lines/s `);
  if (done === total) process.stderr.write('\n');
}

/** Runs the batch with an open model context (used by the CLI and tests). */
export async function runBatchWith(ctx: EditContext, file: string, outDir: string, options: BatchOptions = {}, solver?: EditSolver): Promise<BatchSummary> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const lines = text.split('\n').map((t, i) => ({ line: i + 1, text: t.trim() })).filter((l) => l.text !== '' && !l.text.startsWith('#'));
  const keys = new Map(lines.map((l) => [l.line, lineKey(l.text)]));
  mkdirSync(join(outDir, 'edits'), { recursive: true });
  const resultsPath = join(outDir, 'results.jsonl');
  const done = loadDone(resultsPath, keys);
  const todo = lines.filter((l) => !done.has(l.line));
  const chunkSize = options.chunk ?? 32;
  const s = solver ?? (await defaultSolver());
  const tok = ctx.pipeline.tokenizer;
  const L = tok.maxLength;
  const t0 = performance.now();
  let solveMsTotal = 0;
  let ok = 0;
  let errors = 0;
  let processed = 0;
  const append = (row: BatchRow) => {
    appendFileSync(resultsPath, JSON.stringify(row) + '\n');
    if (row.status === 'ok') ok++;
    else errors++;
  };
  if (!options.quiet) progress(0, todo.length, t0);
  for (let c = 0; c < todo.length; c += chunkSize) {
    const chunk = todo.slice(c, c + chunkSize);
    const planned: { line: number; key: string; req: ReturnType<typeof parseBatchLine>; plan: RowPlan; offset: number }[] = [];
    const texts: string[] = [];
    for (const l of chunk) {
      const key = keys.get(l.line)!;
      try {
        const req = parseBatchLine(l.text);
        const plan = planRows(tok, req);
        planned.push({ line: l.line, key, req, plan, offset: texts.length });
        texts.push(...plan.texts);
      } catch (err) {
        append({ line: l.line, key, status: 'error', error: (err as Error).message });
      }
    }
    if (planned.length > 0) {
      const te = performance.now();
      const emb = await ctx.pipeline.encodePrompts(texts);
      const encodeMs = performance.now() - te;
      const per = emb.length / texts.length;
      const built = planned.map((p) => assembleRows(p.plan, emb.subarray(p.offset * per, (p.offset + p.plan.texts.length) * per), L));
      const ts = performance.now();
      let solved;
      try {
        solved = await s.solve(built[0]!.d, built.map((b, i) => ({ source: b.source, destination: b.destination, rows: b.rows, lambda: planned[i]!.plan.lambda })));
      } catch (err) {
        for (const p of planned) append({ line: p.line, key: p.key, status: 'error', error: (err as Error).message });
        planned.length = 0;
      }
      const solveMs = performance.now() - ts;
      solveMsTotal += solveMs;
      planned.forEach((p, i) => {
        const pair = p.req.pairs[0]!;
        try {
          const edit: Edit = {
            d: built[i]!.d,
            fingerprint: ctx.fingerprint,
            steps: [{ pairs: p.req.pairs, preserve: p.req.preserve ?? [], lambda: p.plan.lambda, augmentations: [...(p.req.augmentations ?? [])], mode: p.req.mode ?? 'kv', rows: built[i]!.rows, D: solved![i]!.D, G: solved![i]!.G }],
          };
          const name = `line-${String(p.line).padStart(5, '0')}.safetensors`;
          saveEdit(join(outDir, 'edits', name), edit);
          append({
            line: p.line, key: p.key, status: 'ok', file: `edits/${name}`, source: pair.source, destination: pair.destination, lambda: p.plan.lambda,
            onlyV: p.req.onlyV, rows: built[i]!.rows, layers: ctx.map.layers.length, encodeMs: encodeMs / planned.length, solveMs: solveMs / planned.length,
            ...(p.plan.warnings.length > 0 ? { warnings: p.plan.warnings } : {}),
          });
        } catch (err) {
          append({ line: p.line, key: p.key, status: 'error', error: (err as Error).message });
        }
      });
    }
    processed += chunk.length;
    if (!options.quiet) progress(processed, todo.length, t0);
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    total: lines.length, skipped: done.size, ok, errors, seconds, solveSeconds: solveMsTotal / 1000,
    editsPerSecond: ok / Math.max(1e-9, seconds), solverEditsPerSecond: ok / Math.max(1e-9, solveMsTotal / 1000), solver: s.name,
  };
}

export async function runBatch(file: string, outDir: string, options: BatchOptions): Promise<void> {
  if (!existsSync(file)) throw new UsageError(`batch file ${file} does not exist`);
  const pipeline = await loadPipeline(options.model, { device: options.device, threads: options.threads });
  try {
    const ctx = await openEditContext(pipeline);
    const s = await runBatchWith(ctx, file, outDir, options);
    console.error(
      `${s.ok} edits written, ${s.errors} errors, ${s.skipped} lines already done (of ${s.total}); ` +
        `${s.editsPerSecond.toFixed(1)} edits/s end to end, ${s.solverEditsPerSecond.toFixed(1)} edits/s in the solver (${s.solver}); ` +
        `each edit covers ${ctx.map.layers.length} layers × K/V; results in ${join(outDir, 'results.jsonl')}`,
    );
  } finally {
    await pipeline.close();
  }
}

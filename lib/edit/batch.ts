// `edit --batch EDITS.jsonl --out DIR`: one edit per JSONL line, for servers that compute many edits.
// Lines are processed in chunks: every prompt of a chunk is encoded in one text-encoder pass and every edit of a
// chunk is solved in one batched native call. Each line gets an edit file (DIR/edits/line-NNNNN.safetensors) and
// one row in DIR/results.jsonl (status, timings, the line's effective settings and the model fingerprint, or the
// error). A bad line does not stop the others. A line may leave out λ, onlyV, augmentations and preserve: the
// run's defaults (the CLI's --lambda, --only-v, --no-augment/--augmentations, --preserve) fill them in.
// Reruns are resumable: a line counts as done when its latest row (same line number, same text) is 'ok' and
// records the same effective settings (λ, onlyV, augmentations, preserve) and model fingerprint as this run
// would use; every other line is computed again: failed lines are retried, lines whose settings changed (another
// --lambda, another model) are recomputed, and so are lines whose edit file is missing or damaged (every kept
// file is parsed fully on resume; a damaged one is reported through `onRepair`). Rows are appended only after
// their edit file is in place and on disk: a chunk's edit files are written to temporary names, fsynced together,
// renamed, the folder fsynced once, and then the chunk's rows are appended with one write and one fsync (one
// flush wait per chunk, not two per line). The last row of a line is its result. On start and at the end the
// file is rewritten compactly (atomically): one row per line, a torn last row dropped, rows of changed or removed
// lines (and their edit files) discarded, so nothing is lost, duplicated or silently mixed. The log's file handling is lib/fs/run-log.ts. Nothing here writes to the terminal:
// progress goes to `onProgress`, and the caller reports the summary.
import { createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { assembleRows, planRows, type EditRequest, type RowPlan } from './compute.js';
import { EditError, type Edit } from './edit.js';
import { encodeEdit, loadEdit } from './edit-file.js';
import { DEFAULT_AUGMENTATIONS } from './augment.js';
import { openModelForEdit, type AnyEditContext } from './context.js';
import { defaultSolver, type EditSolver } from '../solver/select.js';
import { makeDirectory } from '../fs/make-directory.js';
import { MAX_BATCH_FILE_BYTES, readRegularFileSync } from '../fs/bounded-read.js';
import { lockOutputFolder } from '../fs/out-lock.js';
import { appendAllToLog, readLogFile, settingDifferences, writeLog } from '../fs/run-log.js';
import { writeFilesAtomic } from '../fs/durable-file.js';

/**
 * Values for the fields a line leaves out (a line's own value wins). Unset: λ 0.1, onlyV false, the paper's
 * augmentation templates, no preserve prompts.
 */
export interface BatchDefaults {
  lambda?: number;
  onlyV?: boolean;
  augmentations?: string[];
  preserve?: string[];
}

export interface BatchOptions {
  /** Defaults for the fields a line leaves out. */
  defaults?: BatchDefaults;
  /** an ONNX pipeline folder (default: the embedded model) or an SD 1.x checkpoint (.safetensors file, diffusers folder) */
  model?: string;
  /** the tokenizer folder for a single-file checkpoint (which holds none) */
  tokenizer?: string;
  device?: 'cpu' | 'cuda';
  threads?: number;
  /** Lines per chunk (one encode pass and one batched solve each); default 32. */
  chunk?: number;
  /** Told how many of the lines to compute are done: (0, total) before the first chunk, then after each chunk. */
  onProgress?: (done: number, total: number) => void;
  /** Told of each line whose 'ok' row stands but whose edit file is damaged (why, e.g. "is too short …"): it is computed again. */
  onRepair?: (line: number, file: string, problem: string) => void;
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
  augmentations?: string[];
  preserve?: string[];
  /** edit fingerprint of the model the edit was computed for */
  fingerprint?: string;
  rows?: number;
  layers?: number;
  encodeMs?: number;
  solveMs?: number;
  warnings?: string[];
}

export interface BatchSummary {
  /** lines in the file (blank lines and comments aside) */
  total: number;
  /** lines already done by an earlier run with the same settings (not computed again) */
  skipped: number;
  /** lines computed by this run that succeeded / failed (ok + errors + skipped = total) */
  ok: number;
  errors: number;
  /** of the lines computed by this run: those whose latest earlier attempt had failed */
  retried: number;
  /** of the lines computed by this run: those done earlier with other settings (λ, onlyV, augmentations, preserve, model) */
  recomputed: number;
  /** of the lines computed by this run: those done earlier whose edit file was damaged (cut short, corrupt) */
  repaired: number;
  seconds: number;
  solveSeconds: number;
  editsPerSecond: number;
  solverEditsPerSecond: number;
  solver: string;
}

/** What runBatch returns: the summary, where the results are, and how many layers each edit covers. */
export interface BatchReport extends BatchSummary {
  /** path of results.jsonl */
  results: string;
  /** cross-attention layers each edit covers (K and/or V of each) */
  layers: number;
}

/** The key of a line in results.jsonl: a hash of its text (a changed line is a new line). */
export function lineKey(text: string): string {
  return createHash('sha1').update(text).digest('hex').slice(0, 16);
}

/** Parses one JSONL line into an edit request, filling in `defaults` for the fields it leaves out; throws EditError with a clear message. */
export function parseBatchLine(
  text: string,
  defaults: BatchDefaults = {},
): EditRequest & { onlyV: boolean; lambda: number; augmentations: string[]; preserve: string[] } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new EditError(`not valid JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new EditError('a line must be a JSON object');
  const o = v as Record<string, unknown>;
  const source = o.source;
  const destination = o.destination ?? o.dest;
  if (typeof source !== 'string' || typeof destination !== 'string') throw new EditError('"source" and "destination" must be strings');
  const lambda = o.lambda ?? defaults.lambda ?? 0.1;
  if (typeof lambda !== 'number') throw new EditError('"lambda" must be a number');
  const aug = o.augmentations;
  let augmentations: string[];
  if (aug === undefined) augmentations = [...(defaults.augmentations ?? DEFAULT_AUGMENTATIONS)];
  else if (aug === true) augmentations = [...DEFAULT_AUGMENTATIONS];
  else if (aug === false) augmentations = [];
  else if (Array.isArray(aug) && aug.every((a) => typeof a === 'string')) augmentations = aug as string[];
  else throw new EditError('"augmentations" must be true, false or a list of strings');
  const onlyV = o.onlyV ?? o.only_v ?? o['only-v'] ?? defaults.onlyV ?? false;
  if (typeof onlyV !== 'boolean') throw new EditError('"onlyV" must be a boolean');
  const preserve = o.preserve ?? defaults.preserve ?? [];
  if (!Array.isArray(preserve) || !preserve.every((p) => typeof p === 'string'))
    throw new EditError('"preserve" must be a list of strings');
  return {
    pairs: [{ source, destination }],
    lambda,
    augmentations,
    mode: onlyV ? 'v' : 'kv',
    preserve: [...(preserve as string[])],
    onlyV,
  };
}

/** What a result depends on besides the line's prompts: its effective settings and the model (null: not recorded). */
type LineSettings = {
  lambda: number | null;
  onlyV: boolean | null;
  augmentations: string[] | null;
  preserve: string[] | null;
  fingerprint: string | null;
};

function lineSettings(s: {
  lambda?: number;
  onlyV?: boolean;
  augmentations?: string[];
  preserve?: string[];
  fingerprint?: string;
}): LineSettings {
  return {
    lambda: s.lambda ?? null,
    onlyV: s.onlyV ?? null,
    augmentations: s.augmentations ?? null,
    preserve: s.preserve ?? null,
    fingerprint: s.fingerprint ?? null,
  };
}

const editName = (line: number) => `line-${String(line).padStart(5, '0')}.safetensors`;

/** Rewrites results.jsonl atomically with one row per line, in line order. */
function writeRows(resultsPath: string, rows: Iterable<BatchRow>): void {
  writeLog(
    resultsPath,
    [...rows].sort((a, b) => a.line - b.line),
  );
}

interface Loaded {
  /** the latest row of each line still in the file, keyed by line */
  rows: Map<number, BatchRow>;
  /** lines whose latest row is 'ok' with this run's settings: not computed again */
  done: Set<number>;
  /** lines whose latest row is an error: retried */
  failed: Set<number>;
  /** lines done earlier with other settings or another model: computed again */
  changed: Set<number>;
  /** lines whose 'ok' row stands but whose edit file is damaged: computed again */
  damaged: Set<number>;
}

/** Why the edit file of an 'ok' row cannot be trusted (parsed fully, checked against the row), or undefined. */
async function editFileProblem(path: string, row: BatchRow): Promise<string | undefined> {
  try {
    const edit = await loadEdit(path, row.fingerprint);
    if (edit.steps.length !== 1 || (row.rows !== undefined && edit.steps[0]!.rows !== row.rows))
      return `${path} does not hold the edit its row records`;
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Reads existing rows and keeps the latest one of each line. Dropped: a torn row (its line is redone), rows of lines
 * whose text changed or that are gone, 'ok' rows whose settings differ from `wanted(line)` (with their edit files,
 * which were computed with those settings) and 'ok' rows whose edit file is missing or damaged (each kept file is
 * parsed fully; `onRepair` hears of a damaged one). Error rows stay until a retry supersedes them.
 */
async function loadRows(
  resultsPath: string,
  editsDir: string,
  keys: Map<number, string>,
  wanted: (line: number) => LineSettings | undefined,
  onRepair: BatchOptions['onRepair'],
): Promise<Loaded> {
  const loaded: Loaded = { rows: new Map(), done: new Set(), failed: new Set(), changed: new Set(), damaged: new Set() };
  const log = readLogFile(resultsPath);
  if (log === undefined) return loaded;
  const latest = new Map<number, BatchRow>();
  const gone = new Set<number>();
  // A row torn by a crash (set aside by readLogFile, or any line that is not JSON) is skipped: its line is redone.
  for (const { value } of log.lines) {
    const row = value as BatchRow;
    if (typeof row !== 'object' || row === null || !Number.isSafeInteger(row.line)) continue;
    if (keys.get(row.line) === row.key) latest.set(row.line, row);
    else gone.add(row.line);
  }
  for (const [line, row] of latest) {
    if (row.status === 'ok') {
      const want = wanted(line);
      if (want === undefined || settingDifferences(lineSettings(row), want).length > 0) {
        loaded.changed.add(line);
        gone.add(line);
      } else if (existsSync(join(editsDir, editName(line)))) {
        // A file cut short by a full disk or damaged later must not count as done: it is parsed fully.
        const problem = await editFileProblem(join(editsDir, editName(line)), row);
        if (problem === undefined) {
          loaded.rows.set(line, row);
          loaded.done.add(line);
        } else {
          loaded.damaged.add(line);
          gone.add(line);
          onRepair?.(line, join(editsDir, editName(line)), problem);
        }
      } // else its edit file was deleted: the line is computed again
    } else {
      loaded.rows.set(line, row);
      loaded.failed.add(line);
    }
  }
  for (const line of gone) if (!loaded.done.has(line)) rmSync(join(editsDir, editName(line)), { force: true });
  writeRows(resultsPath, loaded.rows.values()); // so that dropped rows do not linger
  return loaded;
}

/** One line of a batch file to compute: its 1-based number in the file and its text. */
export interface BatchLine {
  line: number;
  text: string;
}

/**
 * A computed chunk of lines, not yet written: the rows of lines that failed, the rows of lines that succeeded with
 * their edit files' bytes, the solve's wall time and the solver's name. Made by computeBatchChunk (here or on a
 * queue worker) and written by BatchRun.write, so both paths write the same files and rows.
 */
export interface ChunkOutcome {
  errors: BatchRow[];
  edits: { row: BatchRow; data: Uint8Array }[];
  solveMs: number;
  solver: string;
}

/**
 * Computes one chunk of lines: every prompt encoded in one text-encoder pass, every edit solved in one batched call.
 * A line that fails (bad JSON, prompts that cannot be aligned, a failed solve) gets an error row; nothing is written.
 * `editsDir` only names the files in messages. Example:
 * `const c = await computeBatchChunk(ctx, [{ line: 1, text: '{"source":"a circle","destination":"a red circle"}' }], {}, solver)`.
 */
export async function computeBatchChunk(
  ctx: AnyEditContext,
  chunk: readonly BatchLine[],
  defaults: BatchDefaults,
  solver: EditSolver,
  editsDir = 'edits',
): Promise<ChunkOutcome> {
  const tok = ctx.pipeline.tokenizer;
  const L = tok.maxLength;
  const errors: BatchRow[] = [];
  const edits: ChunkOutcome['edits'] = [];
  const fail = (line: number, text: string, err: unknown) =>
    errors.push({ line, key: lineKey(text), status: 'error', error: (err as Error).message });
  const planned: { line: number; text: string; req: ReturnType<typeof parseBatchLine>; plan: RowPlan; offset: number }[] = [];
  const prompts: string[] = [];
  for (const l of chunk) {
    try {
      const req = parseBatchLine(l.text, defaults);
      const plan = planRows(tok, req);
      planned.push({ line: l.line, text: l.text, req, plan, offset: prompts.length });
      prompts.push(...plan.texts);
    } catch (err) {
      fail(l.line, l.text, err);
    }
  }
  let solveMs = 0;
  if (planned.length > 0) {
    const te = performance.now();
    const emb = await ctx.pipeline.encodePrompts(prompts);
    const encodeMs = performance.now() - te;
    const per = emb.length / prompts.length;
    const built = planned.map((p) => assembleRows(p.plan, emb.subarray(p.offset * per, (p.offset + p.plan.texts.length) * per), L));
    const ts = performance.now();
    let solved;
    try {
      solved = await solver.solve(
        built[0]!.d,
        built.map((b, i) => ({ source: b.source, destination: b.destination, rows: b.rows, lambda: planned[i]!.plan.lambda })),
      );
    } catch (err) {
      for (const p of planned) fail(p.line, p.text, err);
      planned.length = 0;
    }
    solveMs = performance.now() - ts;
    planned.forEach((p, i) => {
      const pair = p.req.pairs[0]!;
      try {
        const edit: Edit = {
          d: built[i]!.d,
          fingerprint: ctx.fingerprint,
          steps: [
            {
              pairs: p.req.pairs,
              preserve: p.req.preserve ?? [],
              lambda: p.plan.lambda,
              augmentations: [...(p.req.augmentations ?? [])],
              mode: p.req.mode ?? 'kv',
              rows: built[i]!.rows,
              D: solved![i]!.D,
              G: solved![i]!.G,
            },
          ],
        };
        const name = editName(p.line);
        edits.push({
          data: encodeEdit(edit, join(editsDir, name)),
          row: {
            line: p.line,
            key: lineKey(p.text),
            status: 'ok',
            file: `edits/${name}`,
            source: pair.source,
            destination: pair.destination,
            lambda: p.plan.lambda,
            onlyV: p.req.onlyV,
            augmentations: p.req.augmentations,
            preserve: p.req.preserve,
            fingerprint: ctx.fingerprint,
            rows: built[i]!.rows,
            layers: ctx.map.layers.length,
            encodeMs: encodeMs / planned.length,
            solveMs: solveMs / planned.length,
            ...(p.plan.warnings.length > 0 ? { warnings: p.plan.warnings } : {}),
          },
        });
      } catch (err) {
        fail(p.line, p.text, err);
      }
    });
  }
  return { errors, edits, solveMs, solver: solver.name };
}

/**
 * The writing side of a batch run on --out: reads the batch file, locks the folder, loads the rows of earlier runs
 * (see the header) and knows which lines are still to compute; `write` puts a computed chunk's edit files and rows
 * on disk, `finish` rewrites results.jsonl compactly, releases the lock and returns the summary. runBatchWith computes
 * the chunks here; lib/queue/ has workers compute them. Example:
 * `const run = await BatchRun.open(ctx.fingerprint, 'edits.jsonl', 'out', {}); for (const c of run.chunks()) await run.write(await computeBatchChunk(ctx, c, {}, solver)); run.finish()`.
 */
export class BatchRun {
  /** every line of the file (blank lines and comments aside), in file order */
  readonly lines: BatchLine[];
  /** the lines to compute (not done by an earlier run with the same settings), in file order */
  readonly todo: BatchLine[];
  readonly resultsPath: string;
  private readonly current: Map<number, BatchRow>;
  private readonly done: number;
  private readonly retried: number;
  private readonly recomputed: number;
  private readonly repaired: number;
  private readonly editsDir: string;
  private readonly t0 = performance.now();
  private ok = 0;
  private errors = 0;
  private solveMs = 0;
  private solver = '';
  private releaseLock: (() => void) | undefined;

  private constructor(
    lines: BatchLine[],
    outDir: string,
    loaded: Loaded,
    releaseLock: () => void,
    private readonly options: BatchOptions,
  ) {
    this.lines = lines;
    this.resultsPath = join(outDir, 'results.jsonl');
    this.editsDir = join(outDir, 'edits');
    this.current = loaded.rows;
    this.done = loaded.done.size;
    this.todo = lines.filter((l) => !loaded.done.has(l.line));
    this.retried = this.todo.filter((l) => loaded.failed.has(l.line)).length;
    this.recomputed = this.todo.filter((l) => loaded.changed.has(l.line)).length;
    this.repaired = this.todo.filter((l) => loaded.damaged.has(l.line)).length;
    this.releaseLock = releaseLock;
  }

  /** Reads `file`, locks `outDir` (OutputInUseError while another run holds it) and loads its earlier rows. */
  static async open(fingerprint: string, file: string, outDir: string, options: BatchOptions = {}): Promise<BatchRun> {
    let text: string;
    try {
      // Only a regular file, at most 1 GiB: `--batch /dev/zero` or a FIFO is refused at once instead of read forever.
      text = readRegularFileSync(file, MAX_BATCH_FILE_BYTES).toString('utf8');
    } catch (err) {
      throw new EditError((err as Error).message, { cause: err });
    }
    const defaults = options.defaults ?? {};
    const lines = text
      .split('\n')
      .map((t, i) => ({ line: i + 1, text: t.trim() }))
      .filter((l) => l.text !== '' && !l.text.startsWith('#'));
    const keys = new Map(lines.map((l) => [l.line, lineKey(l.text)]));
    const texts = new Map(lines.map((l) => [l.line, l.text]));
    const wanted = (line: number): LineSettings | undefined => {
      try {
        const req = parseBatchLine(texts.get(line)!, defaults);
        return lineSettings({ ...req, fingerprint });
      } catch {
        return undefined; // the line fails now: not done
      }
    };
    const editsDir = join(outDir, 'edits');
    makeDirectory(editsDir);
    const releaseLock = lockOutputFolder(outDir, 'edit --batch');
    try {
      const loaded = await loadRows(join(outDir, 'results.jsonl'), editsDir, keys, wanted, options.onRepair);
      return new BatchRun(lines, outDir, loaded, releaseLock, options);
    } catch (err) {
      releaseLock();
      throw err;
    }
  }

  /** The lines to compute in chunks of `size` (default: options.chunk, else 32), in file order. */
  chunks(size = this.options.chunk ?? 32): BatchLine[][] {
    const out: BatchLine[][] = [];
    for (let c = 0; c < this.todo.length; c += size) out.push(this.todo.slice(c, c + size));
    return out;
  }

  /**
   * Writes a computed chunk: its edit files together (all or none; on failure each of its lines gets an error row and
   * is retried later), then its rows with one append and one fsync. A failed line keeps no edit file.
   */
  async write(outcome: ChunkOutcome): Promise<void> {
    const rows = [...outcome.errors];
    const staged = outcome.edits.map((e) => ({ row: e.row, path: join(this.editsDir, editName(e.row.line)), data: e.data }));
    try {
      await writeFilesAtomic(staged);
      for (const f of staged) rows.push(f.row);
    } catch (err) {
      for (const f of staged) rows.push({ line: f.row.line, key: f.row.key, status: 'error', error: (err as Error).message });
    }
    // A failed line keeps no edit file (one left by an earlier attempt would contradict its row).
    for (const row of rows) if (row.status === 'error') rmSync(join(this.editsDir, editName(row.line)), { force: true });
    appendAllToLog(this.resultsPath, rows);
    for (const row of rows) {
      this.current.set(row.line, row);
      if (row.status === 'ok') this.ok++;
      else this.errors++;
    }
    this.solveMs += outcome.solveMs;
    if (outcome.solver !== '') this.solver = outcome.solver;
  }

  /** Rewrites results.jsonl with one row per line (a retried line's new row replaces its error row), releases the lock. */
  finish(): BatchSummary {
    writeRows(this.resultsPath, this.current.values());
    this.close();
    const seconds = (performance.now() - this.t0) / 1000;
    return {
      total: this.lines.length,
      skipped: this.done,
      ok: this.ok,
      errors: this.errors,
      retried: this.retried,
      recomputed: this.recomputed,
      repaired: this.repaired,
      seconds,
      solveSeconds: this.solveMs / 1000,
      editsPerSecond: this.ok / Math.max(1e-9, seconds),
      solverEditsPerSecond: this.ok / Math.max(1e-9, this.solveMs / 1000),
      solver: this.solver,
    };
  }

  /** Releases the folder's lock without rewriting the rows (the run stopped early). */
  close(): void {
    this.releaseLock?.();
    this.releaseLock = undefined;
  }
}

/** Runs the batch with an open model context (used by the CLI and tests). */
export async function runBatchWith(
  ctx: AnyEditContext,
  file: string,
  outDir: string,
  options: BatchOptions = {},
  solver?: EditSolver,
): Promise<BatchSummary> {
  const run = await BatchRun.open(ctx.fingerprint, file, outDir, options);
  try {
    const s = solver ?? (await defaultSolver());
    const total = run.todo.length;
    let processed = 0;
    options.onProgress?.(0, total);
    for (const chunk of run.chunks()) {
      await run.write(await computeBatchChunk(ctx, chunk, options.defaults ?? {}, s, join(outDir, 'edits')));
      processed += chunk.length;
      options.onProgress?.(processed, total);
    }
    const summary = run.finish();
    return { ...summary, solver: s.name };
  } finally {
    run.close();
  }
}

/**
 * Runs a batch file with the model of `options` (loaded and closed here); `errors` > 0: some lines failed.
 * Example: `const r = await runBatch('edits.jsonl', 'out/batch', { model: 'models/sd15' }); r.ok`.
 */
export async function runBatch(file: string, outDir: string, options: BatchOptions): Promise<BatchReport> {
  if (!existsSync(file)) throw new EditError(`batch file ${file} does not exist`);
  const opened = await openModelForEdit(options.model, {
    ...(options.device !== undefined ? { device: options.device } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.tokenizer !== undefined ? { tokenizer: options.tokenizer } : {}),
  });
  try {
    const s = await runBatchWith(opened.ctx, file, outDir, options);
    return { ...s, results: join(outDir, 'results.jsonl'), layers: opened.ctx.map.layers.length };
  } finally {
    await opened.close();
  }
}

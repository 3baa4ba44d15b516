#!/usr/bin/env node
// The fuzz suite's parent: splits seeds over child processes (child.js, `jobs` at a time), watches each with a
// per-call and a per-child time limit, and counts what they report plus what kills them: a crash (the child died
// by a signal or exited non-zero) or a hang (a time limit ran out) is charged to the seed of its last "start"
// line, and the seeds after it are run in a fresh child. Prints a summary and the worst seeds; `--save` appends
// one failing seed per new (function, case, verdict) to regressions.json. docs/fuzzing.md describes the suite.
//
//   node test/fuzz/run.js [--calls 20000] [--seed 1] [--jobs 2] [--save] [--strict-names] [--json FILE]
//                         [--child-calls 500] [--call-timeout 20] [--child-timeout 300] [--no-shrink-case]
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { GENERATOR_VERSION, generateCall, SHRINK_CASE } from './generate-call.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'child.js');
export const REGRESSIONS_FILE = join(here, 'regressions.json');

/** Every verdict, in the order the summary lists them; all but 'ok' are failures. */
export const VERDICTS = [
  'ok',
  'crash',
  'hang',
  'wrong-accept',
  'wrong-reject',
  'wrong-class',
  'inaccurate',
  'wrote-on-reject',
  'unhandled',
];

/** Runs one child on `task` ({ seeds } or { dedicated }) and collects its records and how it ended. */
function runChild(task, { strictNames, callTimeoutMs, childTimeoutMs }) {
  let args;
  if (task.dedicated) args = ['--case', task.dedicated];
  else {
    const contiguous = task.seeds.every((s, i) => s === task.seeds[0] + i);
    args = contiguous ? [String(task.seeds[0]), String(task.seeds.length)] : ['--seeds', task.seeds.join(',')];
  }
  if (strictNames) args.push('--strict-names');
  const env = { ...process.env, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? '1' };
  delete env.NODE_TEST_CONTEXT; // the child is a plain script, not a node:test subprocess
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  return new Promise((resolve) => {
    const records = [];
    let lastStart;
    let pendingText = '';
    let stderr = '';
    let killedFor = null;
    const kill = (why) => {
      if (killedFor === null) {
        killedFor = why;
        child.kill('SIGKILL');
      }
    };
    let callTimer = setTimeout(() => kill('call'), callTimeoutMs);
    const childTimer = setTimeout(() => kill('child'), childTimeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text) => {
      pendingText += text;
      const lines = pendingText.split('\n');
      pendingText = lines.pop();
      for (const line of lines) {
        if (line.trim() === '') continue;
        const record = JSON.parse(line);
        if (record.event === 'start') lastStart = record.seed;
        else records.push(record);
      }
      clearTimeout(callTimer);
      callTimer = setTimeout(() => kill('call'), callTimeoutMs);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text) => {
      stderr = (stderr + text).slice(-4000);
    });
    child.on('close', (code, signal) => {
      clearTimeout(callTimer);
      clearTimeout(childTimer);
      resolve({ records, lastStart, code, signal, killedFor, stderr });
    });
  });
}

/** The counts, groups and worst seeds of a set of records. */
function summarise(records, { seeds, wallMs, jobs }) {
  const counts = Object.fromEntries(VERDICTS.map((v) => [v, 0]));
  const groups = new Map();
  let aliasOnly = 0;
  const accurate = [];
  for (const r of records) {
    counts[r.verdict] = (counts[r.verdict] ?? 0) + 1;
    if (r.verdict === 'ok') {
      if (r.detail?.startsWith('alias-only')) aliasOnly++;
      if (typeof r.error === 'number') accurate.push(r);
      continue;
    }
    const key = `${r.verdict}\t${r.fn}\t${r.case}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { verdict: r.verdict, fn: r.fn, case: r.case, targets: [], count: 0, seeds: [], detail: r.detail }));
    g.count++;
    if (r.target !== undefined && !g.targets.includes(r.target)) g.targets.push(r.target);
    if (g.seeds.length < 5) g.seeds.push(r.seed);
  }
  accurate.sort((a, b) => b.error - a.error);
  const inaccurate = records.filter((r) => r.verdict === 'inaccurate').sort((a, b) => (b.error ?? 0) - (a.error ?? 0));
  return {
    calls: records.length,
    seeds,
    jobs,
    wallMs,
    counts,
    failures: records.length - counts.ok,
    aliasOnly,
    groups: [...groups.values()].sort((a, b) => VERDICTS.indexOf(a.verdict) - VERDICTS.indexOf(b.verdict) || b.count - a.count),
    worstAccepted: accurate.slice(0, 5).map((r) => ({ seed: r.seed, fn: r.fn, error: r.error })),
    worstInaccurate: inaccurate.slice(0, 5).map((r) => ({ seed: r.seed, fn: r.fn, error: r.error, detail: r.detail })),
    records,
  };
}

/**
 * Runs the calls of `seeds` (an array of integers) in child processes, plus the dedicated shrink case when
 * `shrinkCase` is set; resolves to a summary { calls, counts, failures, groups, records, … }.
 *
 * @example
 *   const s = await runSeeds([3, 17, 901]);
 *   s.records.map((r) => r.verdict);   // ['ok', 'wrong-accept', 'ok']
 */
export async function runSeeds(
  seeds,
  { jobs = 2, childCalls = 500, callTimeoutMs = 20_000, childTimeoutMs = 300_000, strictNames = false, shrinkCase = false } = {},
) {
  const started = Date.now();
  const tasks = [];
  if (shrinkCase) tasks.push({ dedicated: SHRINK_CASE });
  for (let i = 0; i < seeds.length; i += childCalls) tasks.push({ seeds: seeds.slice(i, i + childCalls) });
  const records = [];
  const limits = { strictNames, callTimeoutMs, childTimeoutMs };
  let setupFailure = null;
  async function worker() {
    for (let task = tasks.shift(); task !== undefined && setupFailure === null; task = tasks.shift()) {
      const run = await runChild(task, limits);
      records.push(...run.records);
      const clean = run.code === 0 && run.signal === null && run.killedFor === null;
      if (clean) continue;
      if (run.lastStart === undefined) {
        // Nothing ran: the API did not even load (a build error, say); no seed is to blame.
        setupFailure ??= new Error(`fuzz child failed before its first call (exit ${run.code}, signal ${run.signal}):\n${run.stderr}`);
        return;
      }
      const verdict = run.killedFor ? 'hang' : 'crash';
      const how =
        run.killedFor === 'call'
          ? `no output for ${callTimeoutMs / 1000} s`
          : run.killedFor === 'child'
            ? `child ran over ${childTimeoutMs / 1000} s`
            : run.signal
              ? `killed by ${run.signal}`
              : `exit code ${run.code}`;
      const call = task.dedicated ? { fn: 'applyToEmbeddings', case: SHRINK_CASE } : {};
      records.push({
        event: 'result',
        seed: run.lastStart,
        ...call,
        verdict,
        detail: `${how}; ${run.stderr.trim().split('\n').slice(-2).join(' | ').slice(0, 240)}`,
      });
      if (task.seeds) {
        const rest = task.seeds.slice(task.seeds.indexOf(run.lastStart) + 1);
        if (rest.length > 0) tasks.unshift({ seeds: rest });
      }
    }
  }
  await Promise.all(Array.from({ length: jobs }, worker));
  if (setupFailure) throw setupFailure;
  // A crash record has no fn/case yet: the generator says what the seed's call was.
  const missing = records.filter((r) => r.fn === undefined && typeof r.seed === 'number');
  for (const r of missing) {
    const call = generateCall(r.seed);
    Object.assign(r, { fn: call.fn, case: call.case, target: call.expect.names?.[0] });
  }
  return summarise(records, { seeds: seeds.length, wallMs: Date.now() - started, jobs });
}

/**
 * `calls` consecutive seeds from `seed`, plus the dedicated shrink case (unless shrinkCase: false).
 *
 * @example
 *   const s = await runFuzz({ calls: 10_000, seed: 1, jobs: 2 });
 *   s.counts;   // { ok: 9380, crash: 1, hang: 0, 'wrong-accept': 402, … }
 */
export function runFuzz({ calls = 20_000, seed = 1, shrinkCase = true, ...rest } = {}) {
  const seeds = Array.from({ length: calls }, (_, i) => seed + i);
  return runSeeds(seeds, { ...rest, shrinkCase });
}

/**
 * The summary as the text `run.js` prints: verdict counts, failing groups with their first seeds, worst errors.
 *
 * @example
 *   console.log(formatSummary(await runFuzz({ calls: 1000 })));
 */
export function formatSummary(s, { limit = 80 } = {}) {
  const lines = [];
  lines.push(
    `fuzz: ${s.calls} calls (${s.seeds} seeds${s.calls > s.seeds ? ' + dedicated cases' : ''}), ${s.jobs} jobs, ${(s.wallMs / 1000).toFixed(1)} s`,
  );
  lines.push('', 'verdict            count');
  for (const v of VERDICTS) lines.push(`${v.padEnd(18)} ${String(s.counts[v] ?? 0).padStart(6)}`);
  if (s.aliasOnly > 0)
    lines.push(`(${s.aliasOnly} refusals named the argument only by the addon's alias: --strict-names counts them as wrong-class)`);
  if (s.groups.length > 0) {
    lines.push('', 'failures by verdict, function and case (first seeds; example detail):');
    lines.push(`${'count'.padStart(6)}  ${'verdict'.padEnd(15)} ${'function'.padEnd(18)} ${'case (argument)'.padEnd(48)} seeds`);
    for (const g of s.groups.slice(0, limit)) {
      const targets = g.targets.length > 3 ? `${g.targets.slice(0, 3).join(', ')}, …` : g.targets.join(', ');
      const what = targets ? `${g.case} (${targets})` : String(g.case);
      lines.push(
        `${String(g.count).padStart(6)}  ${g.verdict.padEnd(15)} ${String(g.fn).padEnd(18)} ${what.padEnd(48)} ${g.seeds.join(',')}`,
      );
      if (g.detail) lines.push(`${' '.repeat(8)}${g.detail.slice(0, 160)}`);
    }
    if (s.groups.length > limit) lines.push(`  … ${s.groups.length - limit} more groups`);
  }
  if (s.worstInaccurate.length > 0) {
    lines.push('', 'worst inaccurate seeds:');
    for (const r of s.worstInaccurate) lines.push(`  seed ${r.seed} ${r.fn}: ${r.detail}`);
  }
  if (s.worstAccepted.length > 0) {
    lines.push(
      '',
      `worst relative error of the accepted calls: ${s.worstAccepted.map((r) => `${r.error.toExponential(2)} (seed ${r.seed}, ${r.fn})`).join(', ')}`,
    );
  }
  lines.push('', `fuzz: ${s.counts.ok} ok, ${s.failures} failing`);
  return lines.join('\n');
}

/**
 * regressions.json's content ({ generatorVersion, about, entries }), or an empty one.
 *
 * @example
 *   loadRegressions().entries[0];   // { defect: '…', seed: 13, fn: 'applyToEmbeddings', case: '…', verdict, why }
 */
export function loadRegressions(file = REGRESSIONS_FILE) {
  if (!existsSync(file)) return { generatorVersion: GENERATOR_VERSION, about: '', entries: [] };
  return JSON.parse(readFileSync(file, 'utf8'));
}

/**
 * Appends one seed per failing (verdict, function, case) that regressions.json does not hold yet; returns how many.
 *
 * @example
 *   saveFailures(await runFuzz({ calls: 5000 }));   // 3
 */
export function saveFailures(summary, file = REGRESSIONS_FILE) {
  const reg = loadRegressions(file);
  const key = (e) => `${e.verdict}\t${e.fn}\t${e.case}`;
  const known = new Set(reg.entries.map(key));
  let added = 0;
  for (const g of summary.groups) {
    if (known.has(key(g))) continue;
    reg.entries.push({ seed: g.seeds[0], fn: g.fn, case: g.case, verdict: g.verdict, why: g.detail ?? '' });
    known.add(key(g));
    added++;
  }
  writeFileSync(file, `${JSON.stringify(reg, null, 2)}\n`);
  return added;
}

function parseCli(argv) {
  const o = {
    calls: 20_000,
    seed: 1,
    jobs: 2,
    childCalls: 500,
    callTimeoutMs: 20_000,
    childTimeoutMs: 300_000,
    strictNames: false,
    shrinkCase: true,
    save: false,
    json: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const int = () => {
      const v = Number(value());
      if (!Number.isInteger(v) || v < 0) throw new Error(`${flag} must be a whole number`);
      return v;
    };
    if (flag === '--calls') o.calls = int();
    else if (flag === '--seed') o.seed = int();
    else if (flag === '--jobs') o.jobs = Math.max(1, int());
    else if (flag === '--child-calls') o.childCalls = Math.max(1, int());
    else if (flag === '--call-timeout') o.callTimeoutMs = 1000 * int();
    else if (flag === '--child-timeout') o.childTimeoutMs = 1000 * int();
    else if (flag === '--strict-names') o.strictNames = true;
    else if (flag === '--no-shrink-case') o.shrinkCase = false;
    else if (flag === '--save') o.save = true;
    else if (flag === '--json') o.json = value();
    else throw new Error(`unknown flag ${flag} (see the header of test/fuzz/run.js)`);
  }
  return o;
}

async function main() {
  let o;
  try {
    o = parseCli(process.argv.slice(2));
  } catch (err) {
    console.error(`run.js: ${err.message}`);
    process.exit(2);
  }
  const summary = await runFuzz(o);
  console.log(formatSummary(summary));
  if (o.json) {
    const { records, ...rest } = summary;
    writeFileSync(o.json, `${JSON.stringify({ ...rest, failing: records.filter((r) => r.verdict !== 'ok') }, null, 2)}\n`);
  }
  if (o.save) console.log(`--save: ${saveFailures(summary)} new entries in ${REGRESSIONS_FILE}`);
  process.exitCode = summary.failures === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();

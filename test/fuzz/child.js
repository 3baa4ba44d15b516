#!/usr/bin/env node
// The fuzz suite's child runner: makes seeded calls one after another in this process and writes one JSON line
// per call to stdout, with a "start" line before each, through fs.writeSync so that the line of the call that
// crashes the process (a SIGSEGV in the addon) is already out when it dies. run.js reads these lines.
//
//   node test/fuzz/child.js SEED_START COUNT [--strict-names]
//   node test/fuzz/child.js --seeds 3,17,901 [--strict-names]
//   node test/fuzz/child.js --case shrink-during-call
//
// Lines: {"event":"start","seed":S} then {"event":"result","seed":S,"fn","case","target"?,"expect","verdict",
// "detail"?,"error"?,"ms"} (target: the argument an invalid call breaks). "--case shrink-during-call" is the one
// call that resizes a buffer under a pending native call; it runs only in a child of its own, since today it
// kills the process.
import { writeSync } from 'node:fs';

import { pathToFileURL } from 'node:url';

import { generateCall, SHRINK_CASE } from './generate-call.js';
import { runCall } from './run-call.js';

function emit(record) {
  writeSync(1, `${JSON.stringify(record)}\n`);
}

function expectLabel(expect) {
  return expect.outcome === 'accept' ? 'accept' : `${expect.outcome}:${expect.errorClass}`;
}

function parseArgs(argv) {
  const strictNames = argv.includes('--strict-names');
  const rest = argv.filter((a) => a !== '--strict-names');
  if (rest[0] === '--case') return { dedicated: rest[1], strictNames };
  if (rest[0] === '--seeds') return { seeds: (rest[1] ?? '').split(',').filter(Boolean).map(Number), strictNames };
  const start = Number(rest[0]);
  const count = Number(rest[1]);
  if (!Number.isInteger(start) || !Number.isInteger(count) || count < 0) {
    throw new Error('usage: child.js SEED_START COUNT | --seeds a,b,c | --case shrink-during-call [--strict-names]');
  }
  return { seeds: Array.from({ length: count }, (_, i) => start + i), strictNames };
}

/**
 * applyToEmbeddings on a Float32Array over a resizable ArrayBuffer, queued behind a long call, and the buffer
 * shrunk to 0 bytes while it waits. The contract: the call is refused (TypeError naming embeddings) before any
 * native work is queued, so the shrink is harmless. Today the addon keeps a raw pointer into the buffer and reads
 * freed pages: SIGSEGV.
 */
async function shrinkDuringCall(api) {
  const { applyToEmbeddings, solveEdits } = api;
  // Large enough (16 MB, a few hundred ms of work each) that the shrink lands before or during the native read
  // even when this thread is descheduled for a while on a busy machine.
  const d = 256;
  const rows = 16384;
  const source = Float32Array.from({ length: 4 * d }, (_, i) => Math.sin(i));
  const [edit] = await solveEdits(d, [{ source, destination: source.map((v) => 1.1 * v) }], { dense: true });
  emit({ event: 'start', seed: SHRINK_CASE });
  const started = Date.now();
  const long = applyToEmbeddings(new Float32Array(rows * d).fill(0.25), edit);
  const buffer = new ArrayBuffer(rows * d * 4, { maxByteLength: rows * d * 4 });
  const embeddings = new Float32Array(buffer).fill(0.5);
  // The handler is attached at once: a refusal must not count as an unhandled rejection while `long` runs.
  const outcome = applyToEmbeddings(embeddings, edit).then(
    () => null,
    (err) => err ?? new Error('rejected with nothing'),
  );
  buffer.resize(0);
  await long;
  const err = await outcome;
  const base = {
    event: 'result',
    seed: SHRINK_CASE,
    fn: 'applyToEmbeddings',
    case: SHRINK_CASE,
    target: 'embeddings',
    expect: 'reject:TypeError',
  };
  if (err === null) {
    emit({
      ...base,
      verdict: 'wrong-accept',
      detail: 'a resizable buffer was accepted (and survived the shrink)',
      ms: Date.now() - started,
    });
  } else {
    const named = err instanceof TypeError && err.message.includes('embeddings');
    emit({
      ...base,
      verdict: named ? 'ok' : 'wrong-class',
      detail: named ? undefined : `${err?.constructor?.name}: ${err?.message}`,
      ms: Date.now() - started,
    });
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const api = await import('../../lib/index.js');
  let current = null;
  // A stray rejection or exception belongs to the call that is running; the child reports it and goes on.
  const stray = (err) => {
    emit({
      event: 'result',
      seed: current?.seed ?? null,
      fn: current?.fn,
      case: current?.case,
      expect: current ? expectLabel(current.expect) : undefined,
      verdict: 'unhandled',
      detail: `stray ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)}`.slice(0, 300),
      ms: 0,
    });
  };
  process.on('unhandledRejection', stray);
  process.on('uncaughtException', stray);
  if (options.dedicated !== undefined) {
    if (options.dedicated !== SHRINK_CASE) throw new Error(`unknown case ${options.dedicated}`);
    await shrinkDuringCall(api);
    return;
  }
  for (const seed of options.seeds) {
    emit({ event: 'start', seed });
    const call = generateCall(seed);
    current = call;
    const started = performance.now();
    const outcome = await runCall(api, call, { strictNames: options.strictNames });
    const ms = Math.round((performance.now() - started) * 100) / 100;
    emit({
      event: 'result',
      seed,
      fn: call.fn,
      case: call.case,
      target: call.expect.names?.[0],
      expect: expectLabel(call.expect),
      ...outcome,
      ms,
    });
    current = null;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();

// The exit-code contract of the CLI (docs/errors.md, lib/cli/errors.ts): exit 2 when the command line is wrong
// (usage errors, bad argument values, prompts that cannot be aligned, an --out held by another run), exit 1 when
// the work failed (a missing or corrupt model, a bad edit file or dataset, an unavailable backend, anything
// unknown); always one line `time-edit: …`, never a stack trace. And the library side of it: library functions throw
// lib/errors.ts classes, never the CLI's UsageError, and the public API does not export UsageError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackendUnavailableError, InputError, ModelError, OutputInUseError, TimeEditError, invalidInput } from '../lib/errors.js';
import { UsageError, describeFailure, inTermsOfFlags, restate } from '../lib/cli/errors.js';
import { AlignmentError } from '../lib/edit/align.js';
import { EditError } from '../lib/edit/edit.js';
import { SafetensorsError } from '../lib/edit/safetensors.js';
import { DatasetError } from '../lib/eval/timed-csv.js';
import { CrossAttentionError } from '../lib/model/cross-attention.js';
import { OnnxError } from '../lib/model/onnx/index.js';
import { ProtobufError } from '../lib/model/onnx/wire.js';
import { LOCK_NAME, lockOutputFolder } from '../lib/fs/out-lock.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { ClipTokenizer } from '../lib/model/tokenizer.js';
import { generate } from '../lib/sample/generate.js';
import { createScheduler, parseSchedulerName } from '../lib/sample/schedulers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'lib', 'cli.js');
const fx = (name) => join(root, 'test', 'fixtures', name);
const modelPresent = existsSync(join(root, 'models', 'toy-shapes', 'model_index.json'));

function run(args, env = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120000,
    env: { ...process.env, TIME_EDIT_DEBUG: '', ...env },
  });
  return { code: r.status, err: r.stderr, out: r.stdout };
}

/** One failure of the CLI: the exit code, and the message on stderr's first line (the only line unless `more`). */
function assertFailure(r, code, message, { more = false } = {}) {
  assert.equal(r.code, code, `exit ${r.code} (expected ${code}): ${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  assert.match(lines[0], /^time-edit: /);
  assert.match(lines[0], message);
  assert.doesNotMatch(r.err, /\n\s+at /, 'a stack trace was printed');
  if (!more) assert.equal(lines.length, 1, `more than one line: ${r.err}`);
}

test('exit 2: the command line is wrong', () => {
  const dir = mkdtempSync(join(tmpdir(), 'exit2-'));
  try {
    const out = join(dir, 'out');
    // Unknown command; unknown flag (the command's usage text follows the line).
    assertFailure(
      run(['frobnicate']),
      2,
      /^time-edit: unknown command 'frobnicate'; commands: generate, tokenize, edit, eval, bench, worker, queue$/,
    );
    assertFailure(run(['generate', 'a circle', '--bogus', '--out', out]), 2, /Unknown option '--bogus'/, { more: true });
    // A malformed flag value, checked by the CLI.
    assertFailure(
      run(['generate', 'a circle', '--model', fx('tiny-sd'), '--steps', 'x', '--out', out]),
      2,
      /^time-edit: --steps must be a positive integer, got 'x'$/,
    );
    // A value only the library can check (the size multiple is the model's): an InputError, restated with the flag.
    assertFailure(
      run(['generate', 'a circle', '--model', fx('tiny-sd'), '--height', '30', '--out', out]),
      2,
      /^time-edit: --height must be a positive multiple of 4 for this model \(VAE factor 4 × UNet downsampling\), got 30$/,
    );
    assertFailure(
      run(['generate', 'a circle', '--model', fx('tiny-sd'), '--scheduler', 'lms', '--out', out]),
      2,
      /^time-edit: unknown scheduler 'lms'; choose one of: pndm, ddim, euler, dpm\+\+2m$/,
    );
    assert.equal(existsSync(out), false, 'a refused command wrote its --out');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('exit 1: the work failed (missing or corrupt model, bad dataset, bad batch file)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'exit1-'));
  try {
    const out = join(dir, 'out');
    assertFailure(
      run(['generate', 'a circle', '--model', join(dir, 'no-such-model'), '--out', out]),
      1,
      /^time-edit: model folder .*no-such-model does not exist$/,
    );
    const corrupt = join(dir, 'corrupt');
    cpSync(fx('tiny-sd'), corrupt, { recursive: true });
    writeFileSync(join(corrupt, 'unet', 'model.onnx'), 'this is not a protobuf');
    assertFailure(run(['generate', 'a circle', '--model', corrupt, '--out', out]), 1, /^time-edit: cannot load unet\/model\.onnx: /);
    const packed = join(dir, 'packed');
    cpSync(fx('tiny-sd'), packed, { recursive: true });
    cpSync(fx('tiny-sd-bad/packed-kv.onnx'), join(packed, 'unet', 'model.onnx'));
    assertFailure(
      run(['generate', 'a circle', '--model', packed, '--out', out]),
      1,
      /unet\/model\.onnx is an onnxruntime "GPU-optimized" UNet \(found MultiHeadAttention\)/,
    );
    assertFailure(
      run(['tokenize', '--tokenizer', join(dir, 'nope'), 'a circle']),
      1,
      /^time-edit: tokenizer folder .*nope does not exist$/,
    );
    // A TIMED CSV with a row that leaves a column empty: a DatasetError, before any model is loaded.
    const csv = join(dir, 'bad.csv');
    const header =
      'old,new,positive1,positive2,positive3,positive4,positive5,gt1,gt2,gt3,gt4,gt5,negative1,negative2,negative3,negative4,negative5,gn1,gn2,gn3,gn4,gn5';
    const row = [
      'a circle',
      'a purple circle',
      ...Array(5).fill('a big circle'),
      '',
      ...Array(4).fill('a big purple circle'),
      ...Array(5).fill('a square'),
      ...Array(5).fill('a purple square'),
    ];
    writeFileSync(csv, `${header}\n${row.join(',')}\n`);
    assertFailure(run(['eval', 'timed', '--dataset', csv, '--out', out]), 1, /^time-edit: .*bad\.csv: row 2 has an empty 'gt1'$/);
    assertFailure(
      run(['edit', '--batch', join(dir, 'missing.jsonl'), '--out', out]),
      1,
      /^time-edit: batch file .*missing\.jsonl does not exist$/,
    );
    assert.equal(existsSync(out), false, 'a failed command wrote its --out');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with the embedded model: a bad edit file exits 1, unalignable prompts exit 2, an --out in use exits 2', {
  skip: modelPresent ? false : 'no embedded model',
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'exit-model-'));
  try {
    const out = join(dir, 'out');
    const edit = join(dir, 'bad.safetensors');
    writeFileSync(edit, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 123]));
    assertFailure(
      run(['generate', 'a circle', '--edit', edit, '--steps', '1', '--out', out]),
      1,
      /^time-edit: .*bad\.safetensors is not a safetensors file/,
    );
    assertFailure(
      run(['edit', '--source', 'a dog', '--dest', 'a purple circle', '--no-grid', '--out', out]),
      2,
      /source word 'dog' does not appear in the destination/,
    );
    assert.equal(existsSync(out), false);
    // The lock names this test's own (live) process as the holder.
    mkdirSync(out);
    writeFileSync(join(dir, 'e.jsonl'), '{"source":"a circle","destination":"a purple circle"}\n');
    writeFileSync(join(out, LOCK_NAME), JSON.stringify({ pid: process.pid, host: hostname(), what: 'eval timed' }));
    const r = run(['edit', '--batch', join(dir, 'e.jsonl'), '--out', out]);
    assertFailure(
      r,
      2,
      new RegExp(
        `^time-edit: .*out is in use by another time-edit run \\(process ${process.pid}, eval timed\\); wait for it to finish or pick another --out \\(if no such run exists, delete .*${LOCK_NAME}\\)$`,
      ),
    );
    assert.equal(existsSync(join(out, 'results.jsonl')), false, 'the refused run wrote a log');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the mapping: every class of the contract gets its exit code; unknown errors are 1 and not "known"', () => {
  const holder = { pid: 7, host: 'h', onThisHost: true, command: 'eval timed' };
  const cases = [
    [new UsageError('bad flag'), 2],
    [invalidInput('steps', 'a positive integer', 0), 2],
    [new AlignmentError('cannot align'), 2],
    [new OutputInUseError('/o', holder, '/o/.lock'), 2],
    [new ModelError('/m', 'model folder /m does not exist'), 1],
    [new EditError('bad edit'), 1],
    [new SafetensorsError('bad file'), 1],
    [new DatasetError('bad csv'), 1],
    [new OnnxError('bad graph'), 1],
    [new ProtobufError('bad bytes'), 1],
    [new CrossAttentionError('no cross-attention'), 1],
    [new BackendUnavailableError('device', 'cuda', 'no CUDA'), 1],
  ];
  for (const [err, code] of cases) {
    assert.ok(err instanceof Error && (err instanceof UsageError || err instanceof TimeEditError), `${err.name} is not in the vocabulary`);
    assert.deepEqual([err.name, describeFailure(err).exitCode, describeFailure(err).known], [err.constructor.name, code, true]);
  }
  assert.deepEqual(describeFailure(new Error('ENOSPC')), { exitCode: 1, message: 'ENOSPC', known: false });
  assert.deepEqual(describeFailure('a string'), { exitCode: 1, message: 'a string', known: false });
  // A restated error keeps its cause's code; flags replace option names only where the message starts with one.
  assert.deepEqual(describeFailure(restate(new ModelError('/m', 'x'), 'cannot load the judge: x')), {
    exitCode: 1,
    message: 'cannot load the judge: x',
    known: true,
  });
  assert.equal(
    describeFailure(inTermsOfFlags(invalidInput('height', 'a multiple of 8', 9), { height: '--size' })).message,
    '--size must be a multiple of 8, got 9',
  );
  assert.equal(
    describeFailure(inTermsOfFlags(new InputError('steps', 'stepsize is odd'), { steps: '--steps' })).message,
    'stepsize is odd',
  );
  assert.equal(
    describeFailure(inTermsOfFlags(new BackendUnavailableError('device', 'cuda', 'no CUDA'), { device: '--device' })).message,
    '--device cuda: no CUDA, or use --device cpu',
  );
  assert.match(
    describeFailure(new OutputInUseError('/o', holder, '/o/.lock')).message,
    /^\/o is in use by another time-edit run \(process 7, eval timed\); wait for it to finish or pick another --out \(if no such run exists, delete \/o\/\.lock\)$/,
  );
});

/** The library's error: a TimeEditError of class `type`, not the CLI's UsageError, and its message names no flag. */
function isLibraryError(type, re) {
  return (err) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err?.constructor?.name}: ${err?.message}`);
    assert.ok(err instanceof TimeEditError);
    assert.ok(!(err instanceof UsageError), "a library function threw the CLI's UsageError");
    assert.match(err.message, re);
    assert.doesNotMatch(err.message, /(^|\s)--[a-z]/, 'a library message names a command-line flag');
    return true;
  };
}

test('library functions throw the typed classes of lib/errors.ts, never UsageError', async () => {
  await assert.rejects(
    loadPipeline(join(root, 'no-such-model')),
    isLibraryError(ModelError, /model folder .*no-such-model does not exist/),
  );
  await assert.rejects(
    loadPipeline(fx('tiny-sd'), { threads: 0 }),
    isLibraryError(InputError, /^threads must be a positive integer, got 0$/),
  );
  await assert.rejects(
    loadPipeline(fx('tiny-sd'), { device: 'tpu' }),
    isLibraryError(InputError, /^device must be cpu or cuda, got 'tpu'$/),
  );
  await assert.rejects(ClipTokenizer.fromFolder(join(root, 'nope')), isLibraryError(ModelError, /tokenizer folder .*nope does not exist/));
  const modelError = await loadPipeline(fx('tiny-sd-bad')).catch((e) => e);
  assert.ok(modelError instanceof ModelError && modelError.file.endsWith('tiny-sd-bad'), `${modelError}`);
  assert.throws(() => parseSchedulerName('lms'), isLibraryError(InputError, /unknown scheduler 'lms'/));
  assert.throws(
    () => createScheduler({}, 0),
    (e) => isLibraryError(InputError, /^steps must be a positive integer, got 0$/)(e) && e.argument === 'steps' && e.received === 0,
  );
  assert.throws(
    () => createScheduler({ num_train_timesteps: 10 }, 11, 'ddim'),
    isLibraryError(InputError, /^steps \(11\) must not exceed num_train_timesteps \(10\)$/),
  );
  assert.throws(
    () => createScheduler({ beta_schedule: 'cosine' }, 5),
    (e) => isLibraryError(ModelError, /beta_schedule 'cosine' is not supported/)(e) && e.file === 'scheduler/scheduler_config.json',
  );
  assert.throws(
    () => createScheduler({ _class_name: 'LMSDiscreteScheduler' }, 5),
    isLibraryError(ModelError, /_class_name 'LMSDiscreteScheduler' is not a scheduler this library implements/),
  );

  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  try {
    const ok = { prompts: ['a circle'], seeds: [0], steps: 2, guidance: 7.5, height: 16, width: 16 };
    await assert.rejects(
      generate(p, { ...ok, height: 18 }),
      (e) => isLibraryError(InputError, /^height must be a positive multiple of 4/)(e) && e.argument === 'height' && e.received === 18,
    );
    await assert.rejects(
      generate(p, { ...ok, batchSize: 0 }),
      (e) => isLibraryError(InputError, /^batchSize must be a positive integer, got 0$/)(e) && e.argument === 'batchSize',
    );
    await assert.rejects(
      generate(p, { ...ok, seeds: [-1] }),
      (e) => isLibraryError(InputError, /seed must be an integer/)(e) && e.argument === 'seeds',
    );
    await assert.rejects(
      p.withUnet({ path: join(root, 'nope.onnx') }),
      isLibraryError(ModelError, /UNet model .*nope\.onnx does not exist/),
    );
    await assert.rejects(
      p.withUnet({ modelBytes: new Uint8Array([1, 2, 3]) }),
      isLibraryError(ModelError, /cannot load the replacement UNet/),
    );
  } finally {
    await p.close();
  }

  const dir = mkdtempSync(join(tmpdir(), 'lock-'));
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']);
  try {
    writeFileSync(join(dir, LOCK_NAME), JSON.stringify({ pid: child.pid, host: hostname(), what: 'edit --batch' }));
    assert.throws(
      () => lockOutputFolder(dir, 'eval timed'),
      (e) => {
        assert.ok(e instanceof OutputInUseError && !(e instanceof UsageError));
        assert.deepEqual(
          [e.folder, e.holder, e.lockFile],
          [dir, { pid: child.pid, host: hostname(), onThisHost: true, command: 'edit --batch' }, join(dir, LOCK_NAME)],
        );
        assert.doesNotMatch(e.message, /--out/);
        return true;
      },
    );
  } finally {
    child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the public API does not export UsageError, and no library module imports lib/cli', async () => {
  const api = await import('../lib/index.js');
  assert.equal('UsageError' in api, false);
  for (const [name, value] of Object.entries(api))
    if (typeof value === 'function' && value.prototype instanceof Error && value !== TimeEditError)
      assert.ok(value.prototype instanceof TimeEditError, `${name} does not extend TimeEditError`);
  const libDir = join(root, 'lib');
  const offenders = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (p !== join(libDir, 'cli')) walk(p);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') && p !== join(libDir, 'cli.ts')) {
        if (/from '(\.\.?\/)+cli\//.test(readFileSync(p, 'utf8')) || /from '\.\/cli\//.test(readFileSync(p, 'utf8')))
          offenders.push(relative(root, p));
      }
    }
  };
  walk(libDir);
  assert.deepEqual(offenders, [], 'library modules that import lib/cli');
});

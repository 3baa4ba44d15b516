// Every numeric flag of generate/edit/eval/bench has an upper bound (lib/cli/sampling-flags.ts FLAG_LIMITS): a value
// past it is a one-line usage error naming the flag (exit 2), checked before the model loads, instead of an
// allocation that exhausts memory, a stack overflow or a thread-creation abort. The library bounds its own thread
// options too, and the portable CPU kernels turn a failed thread start into an error. Also: messages that used to
// hide what differs (fingerprints) or to skip a warning (a truncated negative prompt).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../lib/errors.js';
import { UsageError } from '../lib/cli/errors.js';
import { FLAG_LIMITS, MAX_SEEDS, parseNumber, parsePositiveInt, parseSeeds } from '../lib/cli/sampling-flags.js';
import { loadPipeline, MAX_THREADS } from '../lib/model/pipeline.js';
import { loadEdit, saveEdit } from '../lib/edit/edit-file.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'lib', 'cli.js');
const modelPresent = existsSync(join(root, 'models', 'toy-shapes', 'model_index.json'));
const addonPresent = existsSync(join(root, 'build', 'Release', 'time_edit.node'));

function runCli(args, timeout = 60000) {
  const r = spawnSync(process.execPath, [cli, ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout,
    maxBuffer: 1 << 24,
    env: { ...process.env, TIME_EDIT_DEBUG: '' },
  });
  return { code: r.status, signal: r.signal, err: r.stderr, out: r.stdout };
}

function assertUsage(r, pattern) {
  assert.equal(r.code, 2, `exit ${r.code} ${r.signal ?? ''}: ${r.err}`);
  assert.match(r.err, pattern);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
}

test("the flag parsers refuse values past each flag's limit, naming the flag", () => {
  assert.equal(parsePositiveInt('10000', '--steps', 50), 10000);
  assert.throws(
    () => parsePositiveInt('1000000000', '--steps', 50),
    (e) => e instanceof UsageError && e.message === '--steps must be at most 10000, got 1000000000',
  );
  assert.throws(() => parsePositiveInt('100000000', '--seeds', 8), /^UsageError: --seeds must be at most 100000, got 100000000$/);
  assert.throws(() => parsePositiveInt('5000', '--threads', 1), /--threads must be at most 1024/);
  assert.throws(() => parseNumber('1e9', '--guidance', 7.5, 0), /--guidance must be at most 1000, got 1000000000/);
  assert.equal(FLAG_LIMITS['--threads'], MAX_THREADS);
  // --seeds: the limit is on the total, checked before any range is expanded.
  const ranges = Array.from({ length: 2000 }, (_, i) => `${i * 100000}-${i * 100000 + 99999}`).join(',');
  const t0 = Date.now();
  assert.throws(
    () => parseSeeds(ranges),
    (e) => e instanceof UsageError && e.message === `--seeds: more than ${MAX_SEEDS} seeds in all`,
  );
  assert.ok(Date.now() - t0 < 2000, 'the ranges were expanded before the check');
  assert.equal(parseSeeds(`0-${MAX_SEEDS - 1}`).length, MAX_SEEDS);
});

test('generate, edit, eval and bench refuse out-of-range numeric flags before loading the model', { skip: !modelPresent }, () => {
  const out = mkdtempSync(join(tmpdir(), 'flags-hardening-'));
  try {
    const o = ['--out', join(out, 'o')];
    assertUsage(
      runCli(['generate', 'a circle', '--steps', '1000000000', '--scheduler', 'euler', ...o]),
      /^time-edit: --steps must be at most 10000, got 1000000000$/m,
    );
    assertUsage(
      runCli(['generate', 'a circle', '--steps', '200000', '--scheduler', 'euler', ...o]),
      /^time-edit: --steps must be at most 10000/m,
    );
    assertUsage(runCli(['generate', 'a circle', '--threads', '100000', ...o]), /^time-edit: --threads must be at most 1024, got 100000$/m);
    assertUsage(
      runCli(['generate', 'a circle', '--height', '1000000', '--width', '1000000', ...o]),
      /^time-edit: --height must be at most 16384, got 1000000$/m,
    );
    assertUsage(runCli(['generate', 'a circle', '--batch', '100000', ...o]), /^time-edit: --batch must be at most 1024/m);
    assertUsage(runCli(['generate', 'a circle', '--guidance', '1e300', ...o]), /^time-edit: --guidance must be at most 1000/m);
    const ranges = Array.from({ length: 2000 }, (_, i) => `${i * 100000}-${i * 100000 + 99999}`).join(',');
    assertUsage(runCli(['generate', 'a circle', '--seeds', ranges, ...o], 20000), /^time-edit: --seeds: more than 100000 seeds in all$/m);
    assertUsage(
      runCli(['edit', '--threads', '4096', '--source', 'a circle', '--dest', 'a blue circle', ...o]),
      /--threads must be at most 1024/,
    );
    assertUsage(
      runCli(['eval', 'timed', '--seeds', '100000000', ...o], 20000),
      /^time-edit: --seeds must be at most 100000, got 100000000$/m,
    );
    assertUsage(runCli(['eval', 'timed', '--threads', '2000', ...o]), /--threads must be at most 1024/);
    assertUsage(runCli(['bench', 'generate', '--size', '100000']), /^time-edit: --size must be at most 16384/m);
    assertUsage(runCli(['bench', 'generate', '--runs', '100000000']), /^time-edit: --runs must be at most 1000/m);
    assertUsage(runCli(['bench', 'solve', '--threads', '100000']), /^time-edit: --threads must be at most 1024, got 100000$/m);
    assertUsage(runCli(['bench', 'solve', '--repeats', '100000000']), /^time-edit: --repeats must be at most 10000/m);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('steps past num_train_timesteps are refused for euler and dpm++2m as for pndm and ddim (exit 2)', { skip: !modelPresent }, () => {
  const out = mkdtempSync(join(tmpdir(), 'flags-hardening-'));
  try {
    for (const scheduler of ['euler', 'dpm++2m']) {
      assertUsage(
        runCli(['generate', 'a circle', '--steps', '5000', '--scheduler', scheduler, '--out', join(out, 'o')]),
        /^time-edit: --steps \(5000\) must not exceed num_train_timesteps \(1000\)$/m,
      );
    }
    assert.equal(existsSync(join(out, 'o')), false);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('the library bounds its thread options', { skip: !modelPresent }, async () => {
  await assert.rejects(
    loadPipeline(undefined, { threads: MAX_THREADS + 1 }),
    (e) =>
      e instanceof InputError && e.argument === 'threads' && e.message === `threads must be at most ${MAX_THREADS}, got ${MAX_THREADS + 1}`,
  );
  if (addonPresent) {
    const { setSolverThreads } = await import('../lib/solver/backend.js');
    assert.throws(() => setSolverThreads(MAX_THREADS + 1, 'cpu-portable'), /threads/);
  }
});

// As root the case runs as nobody, who must be able to reach this checkout (not so for a clone inside a 0700 temp folder).
const runsAsNobody = typeof process.getuid === 'function' && process.getuid() === 0;
const nobodyReachesAddon =
  !runsAsNobody ||
  spawnSync('/usr/sbin/runuser', ['-u', 'nobody', '--', 'test', '-r', join(root, 'lib', 'solver', 'addon.js')]).status === 0;

test('a CPU thread that cannot start is an error, not an abort (RLIMIT_NPROC as nobody)', {
  skip:
    !addonPresent || process.platform !== 'linux' || !existsSync('/usr/bin/prlimit')
      ? 'needs the addon, Linux and prlimit'
      : !nobodyReachesAddon
        ? "as root, nobody cannot read this checkout's lib/ (a folder above it is private)"
        : false,
}, () => {
  // The portable kernels split a large GEMM over --threads std::threads; under a process limit the start fails.
  const script = `
    const { addon } = await import(${JSON.stringify(join(root, 'lib', 'solver', 'addon.js'))});
    const a = addon();
    a.setThreads('cpu-portable', 512);
    const m = 512, n = 256, k = 256;
    try {
      await a.sgemm('cpu-portable', m, n, k, new Float32Array(m * k), new Float32Array(k * n), new Float32Array(m * n));
      console.log('ran');
    } catch (e) { console.log('error: ' + e.message); }`;
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const prefix = asRoot ? ['/usr/sbin/runuser', '-u', 'nobody', '--'] : [];
  const args = [...prefix, '/usr/bin/prlimit', '--nproc=64', process.execPath, '--input-type=module', '-e', script];
  const dir = mkdtempSync(join(tmpdir(), 'flags-hardening-nproc-'));
  chmodSync(dir, 0o755);
  try {
    const r = spawnSync(args[0], args.slice(1), { cwd: dir, encoding: 'utf8', timeout: 60000 });
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    // Either the limit let every thread start, or the failure came back as an error naming the cause.
    assert.match(r.stdout, /^(ran|error: cannot start a CPU thread .*use fewer threads)\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a fingerprint mismatch shows both full fingerprints', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flags-hardening-'));
  try {
    const a = `0123456789ab${'c'.repeat(52)}`;
    const b = `0123456789ab${'d'.repeat(52)}`;
    const path = join(dir, 'e.safetensors');
    const step = {
      pairs: [{ source: 'a circle', destination: 'a blue circle' }],
      preserve: [],
      lambda: 0.1,
      augmentations: [],
      mode: 'kv',
      rows: 1,
      D: Float32Array.of(0.1, 0.2),
      G: Float32Array.of(0.3, 0.4),
    };
    saveEdit(path, { d: 2, fingerprint: a, steps: [step] });
    await assert.rejects(loadEdit(path, b), (e) => e.message.includes(a) && e.message.includes(b));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a truncated negative prompt gets the warning a truncated prompt gets', { skip: !modelPresent }, () => {
  const out = mkdtempSync(join(tmpdir(), 'flags-hardening-'));
  try {
    const r = runCli(['generate', 'a circle', '--negative-prompt', 'red '.repeat(25000), '--steps', '1', '--out', join(out, 'o')]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /time-edit: warning: the negative prompt has more than 75 tokens and was truncated/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

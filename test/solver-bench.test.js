// `time-edit bench solve` command-line handling (the benchmark itself runs in CI as a smoke run, not here: it takes
// tens of seconds and its timings are not asserted).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

const cli = (...args) => spawnSync(process.execPath, ['lib/cli.js', 'bench', 'solve', ...args], { encoding: 'utf8' });

describe('bench solve CLI', () => {
  it('--help lists what is measured and the flags', () => {
    const r = cli('--help');
    assert.equal(r.status, 0);
    for (const s of ['(e) one plain SGEMM', '(f) the paper', '--repeats', '--threads', '--json']) assert.ok(r.stdout.includes(s), s);
  });
  it('bad flags fail with one clear line and exit code 2', () => {
    for (const [args, pattern] of [
      [['--repeats', '0'], /--repeats must be a positive integer, got '0'/],
      [['--threads', 'two'], /--threads must be a positive integer, got 'two'/],
      [['--backend', 'tpu'], /--backend must be cpu, cpu-portable or cuda, got 'tpu'/],
      [['--json', '/nonexistent-dir/x.json'], /--json: folder \/nonexistent-dir does not exist/],
      [['--frobnicate'], /bench solve: Unknown option '--frobnicate'/],
    ]) {
      const r = cli(...args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
  it('an error that is not a usage error prints its message without a stack trace, unless TIME_EDIT_DEBUG=1', async () => {
    const { availableBackends } = await import('../lib/index.js');
    if (availableBackends().some((b) => b.kind === 'cuda')) return; // the error needs a machine without CUDA
    const run = (debug) =>
      spawnSync(process.execPath, ['lib/cli.js', 'bench', 'solve'], {
        encoding: 'utf8',
        env: { ...process.env, TIME_EDIT_BACKEND: 'cuda', TIME_EDIT_DEBUG: debug },
      });
    const plain = run('0');
    assert.equal(plain.status, 1, plain.stderr);
    assert.match(plain.stderr, /^time-edit: TIME_EDIT_BACKEND=cuda, but (this build of time-edit has no CUDA backend|no CUDA device)/);
    assert.doesNotMatch(plain.stderr, /\n\s+at /, 'a stack trace was printed');
    assert.match(plain.stderr, /TIME_EDIT_DEBUG=1/);
    const debug = run('1');
    assert.equal(debug.status, 1);
    assert.match(debug.stderr, /\n\s+at .*solver\/backend\.js/, 'TIME_EDIT_DEBUG=1 shows the stack');
  });
});

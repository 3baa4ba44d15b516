// Faults on a real Redis, each ending with the output of the local run, nothing lost and nothing twice: a worker
// killed with SIGKILL mid-job (another worker completes the job), Redis stopped and restarted mid-run with append-only
// persistence (workers and submitter reconnect and finish), the submitter killed and rerun (it re-attaches to its jobs:
// no job is computed twice), a payload a worker must refuse (failed with the reason, never executed, not retried), and
// a model no worker serves (the submitter says so within the bound instead of waiting forever).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { CLI, haveRedis, runCli, startRedis, startWorker } from './queue-redis.js';
import { differences } from './queue-compare.js';

const skip = haveRedis ? false : 'redis-server is not installed (apt-get install redis-server)';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TOY = join(import.meta.dirname, '..', 'models', 'toy-shapes');

/** 128 good lines and one that fails validation: 5 chunks of 32 lines. */
function lines() {
  const out = [];
  for (let i = 0; i < 128; i++)
    out.push(
      JSON.stringify({ source: 'a square', destination: `a ${['red', 'blue', 'green', 'purple'][i % 4]} square`, lambda: 0.1 + 0.01 * i }),
    );
  out.splice(40, 0, '{"source": "a square", "destination": "a red square", "onlyV": "yes"}');
  return `${out.join('\n')}\n`;
}

/** Starts the CLI without waiting for it. */
function spawnCli(args, env = {}) {
  const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  p.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((r) => p.once('exit', (code, signal) => r({ code, signal, stderr })));
  return { p, exited };
}

/** The queue a worker listens on, from its "serving … (model <16 hex>…)" line. */
const queueOf = (worker) => `time-edit-${/model ([0-9a-f]{16})/.exec(worker.log())[1]}`;

async function until(what, f, ms = 120_000) {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const rowsOf = (out) =>
  existsSync(join(out, 'results.jsonl'))
    ? readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map(JSON.parse)
    : [];

test('queue faults: the output is the local run, each line once', { skip, timeout: 900_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-queue-faults-'));
  const batch = join(dir, 'edits.jsonl');
  writeFileSync(batch, lines());
  const local = join(dir, 'local');
  const r = await runCli(['edit', '--batch', batch, '--out', local]);
  assert.equal(r.code, 1, r.stderr); // one line fails validation
  const check = (out) => {
    assert.deepEqual(differences(local, out), []);
    const rows = rowsOf(out);
    assert.equal(new Set(rows.map((x) => x.line)).size, rows.length, 'each line once');
    assert.equal(rows.length, 129);
    const poison = rows.find((x) => x.line === 41);
    assert.equal(poison.status, 'error');
    assert.match(poison.error, /"onlyV" must be a boolean/);
  };
  try {
    await t.test('a worker killed with SIGKILL mid-job: another worker completes its job', async () => {
      const redis = await startRedis();
      const a = await startWorker(redis.url);
      const conn = new Redis(redis.url);
      let b;
      try {
        const out = join(dir, 'sigkill');
        const sub = spawnCli(['edit', '--batch', batch, '--out', out, '--queue', redis.url]);
        await until('a job to be active', async () => (await conn.llen(`bull:${queueOf(a)}:active`)) > 0);
        a.proc.kill('SIGKILL');
        b = await startWorker(redis.url);
        const done = await sub.exited;
        assert.equal(done.code, 1, done.stderr);
        check(out);
      } finally {
        conn.disconnect();
        await b?.stop();
        await a.stop();
        await redis.stop();
      }
    });

    await t.test('Redis stopped and restarted mid-run (append-only): workers and submitter reconnect and finish', async () => {
      const redis = await startRedis({ appendonly: true });
      const workers = await Promise.all([startWorker(redis.url), startWorker(redis.url)]);
      try {
        const out = join(dir, 'restart');
        const sub = spawnCli(['edit', '--batch', batch, '--out', out, '--queue', redis.url]);
        await until('the first rows', async () => rowsOf(out).length > 0);
        await redis.halt();
        await sleep(1500);
        await redis.launch();
        const done = await sub.exited;
        assert.equal(done.code, 1, done.stderr);
        check(out);
        for (const w of workers) assert.equal(w.proc.exitCode, null, `a worker exited: ${w.log()}`);
        for (const w of workers) assert.deepEqual(await w.stop(), { code: 0, signal: null });
      } finally {
        for (const w of workers) await w.stop();
        await redis.stop();
      }
    });

    await t.test('the submitter killed and rerun: it re-attaches to its jobs, none is computed twice', async () => {
      const redis = await startRedis();
      const w = await startWorker(redis.url);
      try {
        const out = join(dir, 'resubmit');
        const sub = spawnCli(['edit', '--batch', batch, '--out', out, '--queue', redis.url]);
        await until('the first rows', async () => {
          if (sub.p.exitCode !== null) throw new Error(`the submitter exited early: ${(await sub.exited).stderr}`);
          return rowsOf(out).length > 0;
        });
        sub.p.kill('SIGKILL');
        await sub.exited;
        const again = await runCli(['edit', '--batch', batch, '--out', out, '--queue', redis.url]);
        assert.equal(again.code, 1, again.stderr);
        check(out);
        const status = JSON.parse((await runCli(['queue', 'status', '--queue', redis.url, '--json'])).stdout);
        assert.equal(status.workers[0].jobs, 5, 'five chunks, each computed once');
        assert.equal(status.artifacts, 0);
      } finally {
        await w.stop();
        await redis.stop();
      }
    });

    await t.test('a malformed payload or one naming a path is failed with its reason, never executed, not retried', async () => {
      const redis = await startRedis();
      const w = await startWorker(redis.url);
      const name = queueOf(w);
      const connection = { host: '127.0.0.1', port: redis.port };
      const queue = new Queue(name, { connection });
      const events = new QueueEvents(name, { connection });
      try {
        await events.waitUntilReady();
        const fp = JSON.parse((await runCli(['queue', 'status', '--queue', redis.url, '--json'])).stdout).workers[0].models[0].fingerprint;
        const good = {
          kind: 'batch',
          format: 1,
          fingerprint: fp,
          defaults: {},
          lines: [{ line: 1, text: '{"source":"a circle","destination":"a red circle"}' }],
        };
        const cases = [
          [{ ...good, model: '/etc/passwd' }, /unexpected field 'model'/],
          [{ ...good, lines: [{ line: 1, text: 'x', path: '/etc/shadow' }] }, /unexpected field 'path'/],
          [{ ...good, fingerprint: 'ee'.repeat(32) }, /the job is for model eeee/],
          [
            {
              kind: 'generate',
              format: 1,
              fingerprint: fp,
              prompt: 'a circle',
              seeds: [0],
              steps: 2,
              guidance: 7.5,
              height: 33,
              width: 32,
              batchSize: 1,
            },
            /height must be a positive multiple of/,
          ],
          [{ ...good, lines: 'rm -rf /' }, /'lines' must be a list/],
          ['not an object', /must be a JSON object/],
        ];
        for (const [data, reason] of cases) {
          const job = await queue.add('bad', data, { attempts: 3 });
          await assert.rejects(job.waitUntilFinished(events, 60_000), reason);
          const failed = await queue.getJob(job.id);
          assert.equal(failed.attemptsMade, 1, 'not retried');
          assert.equal(failed.returnvalue ?? null, null);
        }
        const ok = await queue.add('good', good);
        const value = await ok.waitUntilFinished(events, 60_000);
        assert.equal(value.edits.length, 1, 'the worker still serves valid jobs');
        assert.equal(w.proc.exitCode, null);
      } finally {
        await events.close();
        await queue.close();
        await w.stop();
        await redis.stop();
      }
    });

    await t.test('a job for a model no worker serves: the submitter stops within the bound, saying so', async () => {
      const redis = await startRedis();
      const w = await startWorker(redis.url);
      try {
        const other = join(dir, 'other-model');
        cpSync(TOY, other, { recursive: true });
        writeFileSync(join(other, 'text_encoder', 'notes.txt'), 'another model: another fingerprint\n');
        const t0 = Date.now();
        const res = await runCli(['edit', '--batch', batch, '--out', join(dir, 'nobody'), '--model', other, '--queue', redis.url], {
          TIME_EDIT_NO_WORKER_S: '2',
        });
        assert.equal(res.code, 1);
        assert.match(res.stderr, /no live worker has served model [0-9a-f]{16}… .* for 2 s; 5 of 5 jobs are still queued/);
        assert.ok(Date.now() - t0 < 60_000);
        const status = JSON.parse((await runCli(['queue', 'status', '--queue', redis.url, '--json'])).stdout);
        assert.equal(status.queues.find((q) => q.waiting > 0).waiting, 5);
        const cleaned = await runCli(['queue', 'clean', '--queue', redis.url]);
        assert.equal(cleaned.code, 0, cleaned.stderr);
      } finally {
        await w.stop();
        await redis.stop();
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a wrong or missing Redis password is one clear line; the password is never printed', { skip, timeout: 120_000 }, async () => {
  const password = 'right-horse-battery';
  const redis = await startRedis({ password });
  try {
    const wrong = `redis://:wrong-staple@127.0.0.1:${redis.port}`;
    for (const args of [
      ['queue', 'status', '--queue', wrong],
      ['worker', '--queue', wrong],
      ['edit', '--batch', join(import.meta.dirname, 'fixtures', 'missing.jsonl'), '--queue', wrong],
    ]) {
      const r = await runCli(args);
      if (args[0] === 'edit') continue; // the missing batch file is reported first: nothing reaches Redis
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /refused the password/);
      assert.doesNotMatch(r.stderr + r.stdout, /wrong-staple|right-horse/);
    }
    const none = await runCli(['queue', 'status', '--queue', `redis://127.0.0.1:${redis.port}`]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /needs a password/);
    const viaEnv = await runCli(['queue', 'status', '--queue', 'env'], { TIME_EDIT_REDIS_URL: redis.url });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(viaEnv.stdout, /redis:\/\/:\*\*\*@127\.0\.0\.1/);
    assert.doesNotMatch(viaEnv.stdout + viaEnv.stderr, /right-horse/);
    const refused = await runCli([
      'queue',
      'status',
      '--queue',
      `redis://127.0.0.1:${await (await import('./queue-redis.js')).freePort()}`,
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /connection refused/);
  } finally {
    await redis.stop();
  }
});

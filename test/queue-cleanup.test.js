// What a queue run leaves in Redis: nothing, even after a submitter was killed between writing a job's output and
// removing the job (its rerun skips those lines, and removes the job and its artifacts), and the list of workers
// holds only live ones (a listed worker whose heartbeat expired is dropped by the next reader, and never counted).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { jobIdOf } from '../lib/queue/payload.js';
import { haveRedis, runCli, startRedis, startWorker } from './queue-redis.js';

const skip = haveRedis ? false : 'redis-server is not installed (apt-get install redis-server)';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** 64 lines: two chunks of 32. */
const batchLines = () =>
  Array.from({ length: 64 }, (_, i) =>
    JSON.stringify({ source: 'a circle', destination: `a ${['red', 'blue'][i % 2]} circle`, lambda: 0.1 + 0.01 * i }),
  );

const status = async (url) => JSON.parse((await runCli(['queue', 'status', '--queue', url, '--json'])).stdout);

test('a rerun removes the finished jobs a killed submitter had written but not removed, with their artifacts', {
  skip,
  timeout: 300_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-queue-cleanup-'));
  const redis = await startRedis();
  const worker = await startWorker(redis.url);
  const conn = new Redis(redis.url);
  try {
    const lines = batchLines();
    const file = join(dir, 'edits.jsonl');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const out = join(dir, 'out');
    const first = await runCli(['edit', '--batch', file, '--out', out, '--queue', redis.url]);
    assert.equal(first.code, 0, first.stderr);
    const rows = readFileSync(join(out, 'results.jsonl'), 'utf8');
    assert.equal((await status(redis.url)).artifacts, 0);

    // The first chunk's job as the first run added it, finished by the worker again: the state a submitter killed
    // after writing the chunk, before removing its job, leaves behind.
    const s = await status(redis.url);
    const { fingerprint, queue: name } = s.workers[0].models[0];
    const data = {
      kind: 'batch',
      format: 1,
      fingerprint,
      defaults: {},
      lines: lines.slice(0, 32).map((text, i) => ({ line: i + 1, text })),
    };
    const queue = new Queue(name, { connection: conn });
    const id = jobIdOf(data);
    await queue.add('batch', data, { jobId: id, removeOnComplete: false, removeOnFail: false });
    for (let i = 0; i < 2400 && (await queue.getJobState(id)) !== 'completed'; i++) await sleep(25);
    assert.equal(await queue.getJobState(id), 'completed');
    assert.equal((await status(redis.url)).artifacts, 32);

    const again = await runCli(['edit', '--batch', file, '--out', out, '--queue', redis.url]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /0 edits written, 0 errors, 64 lines already done/);
    assert.equal(readFileSync(join(out, 'results.jsonl'), 'utf8'), rows, 'the output is untouched');
    assert.equal(await queue.getJobState(id), 'unknown', 'the job is removed');
    const after = await status(redis.url);
    assert.equal(after.artifacts, 0, 'its artifacts are removed');
    assert.equal(after.queues.find((q) => q.queue === name).completed, 0);
    await queue.close();
  } finally {
    conn.disconnect();
    await worker.stop();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('only live workers are listed and counted; an expired one leaves the list', { skip, timeout: 120_000 }, async () => {
  const redis = await startRedis();
  const worker = await startWorker(redis.url);
  const conn = new Redis(redis.url);
  try {
    assert.deepEqual(await conn.smembers('time-edit:workers'), [(await status(redis.url)).workers[0].id]);
    // A worker killed outright: listed, its heartbeat gone (expired).
    await conn.sadd('time-edit:workers', 'ghost-host-1-abcdef');
    const s = await status(redis.url);
    assert.equal(s.workers.length, 1);
    assert.notEqual(s.workers[0].id, 'ghost-host-1-abcdef');
    assert.deepEqual(await conn.smembers('time-edit:workers'), [s.workers[0].id]);
    assert.deepEqual(await worker.stop(), { code: 0, signal: null });
    assert.deepEqual(await conn.smembers('time-edit:workers'), [], 'a stopped worker takes itself off the list');
    assert.equal((await status(redis.url)).workers.length, 0);
  } finally {
    conn.disconnect();
    await worker.stop();
    await redis.stop();
  }
});

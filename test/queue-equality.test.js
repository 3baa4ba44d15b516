// Local and queue runs write the same --out: edit --batch (210 toy lines, a few of them bad), generate (16 images) and
// eval timed --seeds 2 run here and through a real Redis with 2 and then 3 `time-edit worker` processes give the same
// files, byte for byte (timings aside). After each queue run Redis holds none of its jobs or results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveRedis, runCli, startRedis, startWorker } from './queue-redis.js';
import { differences, fileCount } from './queue-compare.js';

const skip = haveRedis ? false : 'redis-server is not installed (apt-get install redis-server)';

/** 210 lines: shapes × colours × λ, some onlyV / no augmentations, and three bad lines. */
export function batchLines() {
  const shapes = ['circle', 'square', 'triangle', 'star'];
  const colours = ['purple', 'blue', 'green', 'yellow', 'red'];
  const lines = [];
  for (let i = 0; i < 207; i++) {
    const s = shapes[i % 4];
    const line = { source: `a ${s}`, destination: `a ${colours[Math.floor(i / 4) % 5]} ${s}`, lambda: [0.1, 0.5, 1][i % 3] };
    if (i % 7 === 0) line.onlyV = true;
    if (i % 5 === 0) line.augmentations = false;
    lines.push(JSON.stringify(line));
  }
  lines.splice(10, 0, '{"source": "a circle"'); // not JSON
  lines.splice(50, 0, '{"source": "a circle", "destination": 7}'); // fails validation
  lines.splice(120, 0, '{"source": "a circle", "destination": "a red circle", "lambda": "big"}');
  return `${lines.join('\n')}\n`;
}

test('edit --batch, generate and eval timed: the same output locally and with 2 and 3 queue workers', {
  skip,
  timeout: 900_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-queue-eq-'));
  const redis = await startRedis();
  const workers = [];
  try {
    const batchFile = join(dir, 'edits.jsonl');
    writeFileSync(batchFile, batchLines());
    const commands = {
      batch: (out) => ['edit', '--batch', batchFile, '--out', out],
      gen: (out) => ['generate', 'a circle', 'a red square', '--seeds', '0-7', '--steps', '10', '--out', out],
      timed: (out) => ['eval', 'timed', '--seeds', '2', '--steps', '10', '--out', out],
    };
    workers.push(...(await Promise.all([startWorker(redis.url), startWorker(redis.url)])));
    for (const [name, args] of Object.entries(commands)) {
      const r = await runCli(args(join(dir, 'local', name)));
      assert.equal(r.code, name === 'batch' ? 1 : 0, r.stderr); // edit --batch exits 1: three lines failed
    }
    assert.equal(fileCount(join(dir, 'local', 'gen')), 16);
    for (const n of [2, 3]) {
      if (n === 3) workers.push(await startWorker(redis.url));
      for (const [name, args] of Object.entries(commands)) {
        const out = join(dir, `queue${n}`, name);
        const r = await runCli([...args(out), '--queue', redis.url]);
        assert.equal(r.code, name === 'batch' ? 1 : 0, r.stderr);
        assert.deepEqual(differences(join(dir, 'local', name), out), [], `${name} with ${n} workers`);
      }
      const rows = readFileSync(join(dir, `queue${n}`, 'batch', 'results.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map(JSON.parse);
      assert.equal(rows.length, 210);
      assert.deepEqual(
        rows.filter((r) => r.status === 'error').map((r) => r.line),
        [11, 51, 121],
      );
      const status = JSON.parse((await runCli(['queue', 'status', '--queue', redis.url, '--json'])).stdout);
      assert.equal(status.workers.length, n);
      assert.equal(status.artifacts, 0, 'every result was removed from Redis once written');
      for (const q of status.queues) assert.deepEqual([q.waiting, q.active, q.completed, q.failed], [0, 0, 0, 0]);
    }
    // Every worker took part, and each exits 0 on SIGTERM.
    const status = JSON.parse((await runCli(['queue', 'status', '--queue', redis.url, '--json'])).stdout);
    assert.ok(
      status.workers.every((w) => w.jobs > 0),
      JSON.stringify(status.workers.map((w) => w.jobs)),
    );
    for (const w of workers) assert.deepEqual(await w.stop(), { code: 0, signal: null });
  } finally {
    for (const w of workers) await w.stop();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

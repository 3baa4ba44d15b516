// One writer per output folder: a second run on a locked --out is refused naming the owner; a lock left by a
// process that is gone is taken over; release removes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCK_NAME, lockOutputFolder } from '../lib/fs/out-lock.js';

test('lockOutputFolder: exclusive while held, refused by name, stale locks taken over, released', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lock-'));
  try {
    // Held by another live process (a child that sleeps).
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']);
    try {
      writeFileSync(join(dir, LOCK_NAME), JSON.stringify({ pid: child.pid, host: hostname(), what: 'eval timed' }));
      assert.throws(
        () => lockOutputFolder(dir, 'edit --batch'),
        new RegExp(`is in use by another time-edit run \\(process ${child.pid}, eval timed\\)`),
      );
    } finally {
      child.kill();
    }
    await new Promise((r) => child.once('exit', r));
    // Its process is gone now: the lock is stale and taken over.
    const release = lockOutputFolder(dir, 'edit --batch');
    assert.equal(JSON.parse(readFileSync(join(dir, LOCK_NAME), 'utf8')).pid, process.pid);
    assert.throws(() => lockOutputFolder(dir, 'eval timed'), new RegExp(`process ${process.pid}, edit --batch`));
    release();
    assert.equal(existsSync(join(dir, LOCK_NAME)), false);
    lockOutputFolder(dir, 'again')();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit --batch refuses an --out that another run holds (exit 2, nothing written)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lock-cli-'));
  try {
    const out = join(dir, 'out');
    spawnSync('mkdir', ['-p', out]);
    writeFileSync(join(dir, 'e.jsonl'), '{"source":"a circle","destination":"a purple circle"}\n');
    writeFileSync(join(out, LOCK_NAME), JSON.stringify({ pid: process.pid, host: hostname(), what: 'eval timed' }));
    const r = spawnSync(process.execPath, ['lib/cli.js', 'edit', '--batch', join(dir, 'e.jsonl'), '--out', out], {
      encoding: 'utf8',
      timeout: 120000,
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /is in use by another time-edit run \(process \d+, eval timed\)/);
    assert.equal(existsSync(join(out, 'results.jsonl')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

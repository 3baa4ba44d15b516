// One writer per output folder. `eval timed` and `edit --batch` append to a log in --out and rewrite it on start;
// two runs on the same folder would interleave rows and delete each other's files. The lock is a file created
// exclusively (O_EXCL) holding the owner's pid and host; a lock whose process is gone (a run killed by a signal
// leaves it behind) is taken over.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../cli/errors.js';

export const LOCK_NAME = '.time-edit.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by another user
  }
}

/** Takes the lock of `dir` (which must exist) for `what`; returns the function that releases it. */
export function lockOutputFolder(dir: string, what: string): () => void {
  const path = join(dir, LOCK_NAME);
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, JSON.stringify({ pid: process.pid, host: hostname(), what, since: new Date().toISOString() }) + '\n');
      } finally {
        closeSync(fd);
      }
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        process.off('exit', release);
        rmSync(path, { force: true });
      };
      process.on('exit', release);
      return release;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
    }
    let owner: { pid?: unknown; host?: unknown; what?: unknown } = {};
    try {
      owner = JSON.parse(readFileSync(path, 'utf8')) as typeof owner;
    } catch {
      // unreadable or torn: treated as stale below
    }
    const pid = typeof owner.pid === 'number' ? owner.pid : undefined;
    const sameHost = owner.host === hostname();
    if (pid !== undefined && (!sameHost || alive(pid))) {
      const who = sameHost ? `process ${pid}` : `process ${pid} on ${String(owner.host)}`;
      throw new UsageError(
        `${dir} is in use by another time-edit run (${who}, ${String(owner.what ?? 'unknown')}); wait for it to finish or pick another --out ` +
          `(if no such run exists, delete ${path})`,
      );
    }
    rmSync(path, { force: true }); // its process is gone: stale
  }
}

// One writer per output folder. `eval timed` and `edit --batch` append to a log in --out and rewrite it on start;
// two runs on the same folder would interleave rows and delete each other's files. The lock is a file holding the
// owner's pid, host and a random token. It appears complete or not at all: the record is written to a temporary
// file that is then link(2)ed to the lock name, and link fails when the name exists, so of two runs starting in
// the same instant exactly one gets it. A lock whose process is gone (a run killed by a signal leaves it behind)
// is taken over: under a takeover guard (itself taken by link), the lock is read again to confirm it is still the
// stale one, a fresh record is renamed over it (rename replaces atomically: the name never disappears, so no
// third run can slip in) and read back to confirm. An empty or torn lock (written by an older version, which
// created the file and then wrote it) younger than a few seconds is "being written", never stale. Release removes
// the lock only while it still holds this run's token. A live holder is an OutputInUseError naming the folder,
// the holder and the lock. On a file system without hard links, the lock is created exclusively and then written
// (the "being written" rule covers the moment between).
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, linkSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { OutputInUseError } from '../errors.js';

export const LOCK_NAME = '.time-edit.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by another user
  }
}

/** How long an empty or torn lock counts as being written by its creator rather than left by a dead one. */
const BEING_WRITTEN_MS = 5000;
/** A takeover guard older than this was left by a run that died during the few system calls of a takeover. */
const GUARD_STALE_MS = 10000;

interface LockRecord {
  pid?: unknown;
  host?: unknown;
  what?: unknown;
  token?: unknown;
}

interface SeenLock {
  record: LockRecord | undefined;
  text: string;
  ino: number;
  mtimeMs: number;
}

/** The lock file as it is now (one open: contents and inode agree), or undefined when there is none. */
function readLock(path: string): SeenLock | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    const text = readFileSync(fd, 'utf8');
    let record: LockRecord | undefined;
    try {
      const v = JSON.parse(text) as unknown;
      if (typeof v === 'object' && v !== null && typeof (v as LockRecord).pid === 'number') record = v as LockRecord;
    } catch {
      // empty or torn: see BEING_WRITTEN_MS
    }
    return { record, text, ino: st.ino, mtimeMs: st.mtimeMs };
  } finally {
    closeSync(fd);
  }
}

/** A complete record in a temporary sibling in `dir`, for link or rename to its final name. */
function writeRecordFile(dir: string, text: string): string {
  const tmp = join(dir, `${LOCK_NAME}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  writeFileSync(tmp, text, { flag: 'wx' });
  return tmp;
}

/** Creates `name` holding `text`, atomically and only if it does not exist; false when it exists. */
function createComplete(dir: string, name: string, text: string): boolean {
  const tmp = writeRecordFile(dir, text);
  try {
    linkSync(tmp, name);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
    try {
      writeFileSync(name, text, { flag: 'wx' }); // no hard links here (FAT, some network file systems)
      return true;
    } catch (err2) {
      if ((err2 as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err2;
    }
  } finally {
    rmSync(tmp, { force: true });
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Replaces the stale lock `seen` with `text`, under the takeover guard: 'taken', or 'retry' when another run is
 * taking over or the lock changed since it was seen.
 */
function takeOver(dir: string, path: string, seen: SeenLock, text: string, token: string): 'taken' | 'retry' {
  const guard = `${path}.takeover`;
  if (!createComplete(dir, guard, text)) {
    const g = readLock(guard);
    if (g !== undefined && Date.now() - g.mtimeMs > GUARD_STALE_MS) rmSync(guard, { force: true });
    return 'retry';
  }
  try {
    const now = readLock(path);
    if (now === undefined) return 'retry'; // removed meanwhile: the exclusive create decides
    if (now.ino !== seen.ino || now.text !== seen.text) return 'retry';
    renameSync(writeRecordFile(dir, text), path);
    return readLock(path)?.record?.token === token ? 'taken' : 'retry';
  } finally {
    rmSync(guard, { force: true });
  }
}

/**
 * Takes the lock of `dir` (which must exist) for `what`; returns the function that releases it. Throws
 * OutputInUseError while another live process holds it. Safe against concurrent runs: exactly one of them gets it.
 * Example: `const release = lockOutputFolder(out, 'eval timed')`.
 */
export function lockOutputFolder(dir: string, what: string): () => void {
  const path = join(dir, LOCK_NAME);
  const token = randomBytes(8).toString('hex');
  const text = `${JSON.stringify({ pid: process.pid, host: hostname(), what, since: new Date().toISOString(), token })}\n`;
  const giveUpAt = Date.now() + 2 * BEING_WRITTEN_MS;
  for (;;) {
    let held = createComplete(dir, path, text);
    if (!held) {
      const seen = readLock(path);
      if (seen === undefined) continue; // released meanwhile
      const owner = seen.record;
      if (owner !== undefined) {
        const pid = owner.pid as number;
        const sameHost = owner.host === hostname();
        if (!sameHost || alive(pid)) {
          throw new OutputInUseError(
            dir,
            { pid, host: String(owner.host), onThisHost: sameHost, command: String(owner.what ?? 'unknown') },
            path,
          );
        }
      } else if (Date.now() - seen.mtimeMs < BEING_WRITTEN_MS && Date.now() < giveUpAt) {
        sleepSync(20); // being written by its creator: look again
        continue;
      }
      held = takeOver(dir, path, seen, text, token) === 'taken';
      if (!held) {
        sleepSync(2);
        continue;
      }
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      process.off('exit', release);
      // Only our own lock: never one that another run took over (it judged this process gone).
      if (readLock(path)?.record?.token === token) rmSync(path, { force: true });
    };
    process.on('exit', release);
    return release;
  }
}

// Writes for the logs that make runs resumable (`eval timed`'s and `edit --batch`'s results.jsonl): a crash or a
// kill leaves either the old file or the new one, and an appended line is on disk before the next one starts.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

function writeAll(fd: number, bytes: Buffer): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** Replaces `path` with `text`: a temporary sibling written and fsynced, renamed over it, the folder fsynced. */
export function replaceFileDurably(path: string, text: string): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeAll(fd, Buffer.from(text, 'utf8'));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  try {
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir); // the rename itself
    } finally {
      closeSync(dir);
    }
  } catch {
    // Folders cannot be opened for fsync on some platforms (Windows); the rename is still atomic there.
  }
}

/** Appends `text` (whole lines) with one write, then fsync. */
export function appendDurably(path: string, text: string): void {
  const fd = openSync(path, 'a');
  try {
    writeAll(fd, Buffer.from(text, 'utf8'));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

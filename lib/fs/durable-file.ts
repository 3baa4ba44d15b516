// Writes that survive a crash, for every file the project writes (PNGs, edit files, ONNX models, tables, the run
// logs). A file is replaced atomically: the bytes go to a temporary sibling `.<name>.<pid>.<random>.tmp`, which is
// fsynced and renamed over the target, and the folder is fsynced so that the rename itself is on disk; a kill or
// an error leaves the old file or the new one, never a half-written one, and no temporary file stays behind. A log
// line is appended with one write and an fsync, so it is on disk before the next one starts. A set of files that
// belong together (the images of one `generate`, the edit files of a batch chunk) is written as a unit by
// writeFilesAtomic: all staged and fsynced together, then renamed; all of them or none. Failures are
// FileErrors naming the file the caller asked for ("cannot write out/a.png: ENOSPC: no space left on device").
// fsync semantics: POSIX fsync(2) and rename(2); https://pubs.opengroup.org/onlinepubs/9699919799/functions/rename.html
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { link, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { errorCode, FileError, systemReason } from './file-error.js';
import { makeDirectory } from './make-directory.js';

function toBytes(data: Uint8Array | string): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** The temporary sibling a write of `path` goes through: same folder (so the rename cannot cross devices), hidden. */
function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

function writeError(path: string, err: unknown): FileError {
  if (err instanceof FileError) return err;
  return new FileError(`cannot write ${path}: ${systemReason(err)}`, path, { code: errorCode(err), cause: err });
}

/** The parent folder of `path`, created if missing; a failure is a FileError naming `path`. */
function makeParent(path: string): void {
  try {
    makeDirectory(dirname(path));
  } catch (err) {
    throw new FileError(`cannot write ${path}: ${(err as Error).message}`, path, { code: errorCode(err), cause: err });
  }
}

function syncFolderSync(dir: string): void {
  let fd: number;
  try {
    fd = openSync(dir, 'r');
  } catch {
    return; // folders cannot be opened for fsync on some platforms (Windows); the rename is still atomic there
  }
  try {
    fsyncSync(fd);
  } catch {
    // as above: some file systems refuse fsync on a folder
  } finally {
    closeSync(fd);
  }
}

async function syncFolder(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  if (handle === undefined) return; // see syncFolderSync
  try {
    await handle.sync().catch(() => undefined);
  } finally {
    await handle.close();
  }
}

/**
 * A file being written atomically: write to `fd` (any offsets), then `commit()` puts it in place, or `discard()`
 * drops it. For writers that stream their bytes or must put several files in place in a given order.
 * Example: `const f = openAtomicFileSync('out/model.onnx'); writeSync(f.fd, bytes); f.commit();`
 */
export interface AtomicFile {
  /** the file the caller named */
  readonly path: string;
  /** descriptor of the temporary sibling, open for writing until commit or discard */
  readonly fd: number;
  /** fsync, close, rename over `path`, fsync the folder; on failure the temporary file is removed */
  commit(): void;
  /** closes and removes the temporary file; does nothing after commit */
  discard(): void;
}

/** Opens a temporary sibling of `path` (creating the parent folder if missing) for an atomic replacement. */
export function openAtomicFileSync(path: string): AtomicFile {
  makeParent(path);
  const tmp = tempPathFor(path);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (err) {
    throw writeError(path, err);
  }
  let isOpen = true;
  let settled = false;
  const discard = (): void => {
    if (settled) return;
    settled = true;
    try {
      if (isOpen) closeSync(fd);
    } catch {
      // the descriptor is gone either way
    }
    isOpen = false;
    rmSync(tmp, { force: true });
  };
  const commit = (): void => {
    if (settled) return;
    try {
      fsyncSync(fd);
      isOpen = false;
      closeSync(fd);
      renameSync(tmp, path);
    } catch (err) {
      discard();
      throw writeError(path, err);
    }
    settled = true;
    syncFolderSync(dirname(resolve(path)));
  };
  return { path, fd, commit, discard };
}

/**
 * Replaces `path` with `data` atomically and durably (see the header), creating the parent folder if missing;
 * throws a FileError naming `path`. Example: `writeFileAtomicSync('out/edit.safetensors', bytes)`.
 */
export function writeFileAtomicSync(path: string, data: Uint8Array | string): void {
  const file = openAtomicFileSync(path);
  try {
    writeAll(file.fd, toBytes(data));
  } catch (err) {
    file.discard();
    throw writeError(path, err);
  }
  file.commit();
}

/**
 * The asynchronous twin of writeFileAtomicSync, for writers on the event loop (PNGs, tables).
 * Example: `await writeFileAtomic('out/images/a.png', pngBytes)`.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  makeParent(path);
  const tmp = tempPathFor(path);
  try {
    const handle = await open(tmp, 'wx');
    try {
      await handle.writeFile(toBytes(data));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(path, err);
  }
  await syncFolder(dirname(resolve(path)));
}

/** One file of a writeFilesAtomic call. */
export interface FileToWrite {
  path: string;
  data: Uint8Array | string;
}

/**
 * Writes several files as a unit: every file goes to its temporary sibling first, the temporaries are fsynced
 * together (concurrently: one flush wait for the set instead of one per file), then all are renamed into place
 * and each folder is fsynced once. If anything fails (a full disk, a permission), the temporaries are removed
 * and so are the files this call already renamed into place: all of them or none. A file that existed before is
 * kept through the renames by a hard link and put back on failure (where the file system has no hard links, it is
 * then gone, as its replacement was). Throws a FileError naming the file that failed.
 * Example: `await writeFilesAtomic([{ path: 'out/a.png', data: a }, { path: 'out/b.png', data: b }])`.
 */
export async function writeFilesAtomic(files: readonly FileToWrite[]): Promise<void> {
  const staged: { path: string; tmp: string; handle?: Awaited<ReturnType<typeof open>> }[] = [];
  const renamed: string[] = [];
  const backups = new Map<string, string>(); // target → hard link to the file it replaces
  let current = files[0]?.path ?? '';
  try {
    for (const f of files) {
      current = f.path;
      makeParent(f.path);
      const entry: (typeof staged)[number] = { path: f.path, tmp: tempPathFor(f.path) };
      staged.push(entry);
      entry.handle = await open(entry.tmp, 'wx');
      await entry.handle.writeFile(toBytes(f.data));
    }
    await Promise.all(
      staged.map(async (e) => {
        try {
          await e.handle!.sync();
        } catch (err) {
          throw writeError(e.path, err);
        }
      }),
    );
    for (const e of staged) {
      current = e.path;
      const h = e.handle!;
      e.handle = undefined;
      await h.close();
    }
    for (const e of staged) {
      const backup = `${tempPathFor(e.path)}.old`;
      if (
        await link(e.path, backup).then(
          () => true,
          () => false,
        )
      )
        backups.set(e.path, backup);
    }
    for (const e of staged) {
      current = e.path;
      await rename(e.tmp, e.path);
      renamed.push(e.path);
    }
  } catch (err) {
    for (const e of staged) {
      await e.handle?.close().catch(() => undefined);
      await rm(e.tmp, { force: true }).catch(() => undefined);
    }
    for (const path of renamed) {
      const backup = backups.get(path);
      await (backup === undefined ? rm(path, { force: true }) : rename(backup, path)).catch(() => undefined);
      backups.delete(path);
    }
    for (const backup of backups.values()) await rm(backup, { force: true }).catch(() => undefined);
    throw writeError(current, err);
  }
  for (const backup of backups.values()) await rm(backup, { force: true }).catch(() => undefined);
  for (const folder of new Set(files.map((f) => dirname(resolve(f.path))))) await syncFolder(folder);
}

/**
 * Appends `text` (whole lines) with one write, then fsync; throws a FileError naming `path`.
 * Example: `appendDurably('out/results.jsonl', JSON.stringify(row) + '\n')`.
 */
export function appendDurably(path: string, text: string): void {
  try {
    const fd = openSync(path, 'a');
    try {
      writeAll(fd, Buffer.from(text, 'utf8'));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw new FileError(`cannot append to ${path}: ${systemReason(err)}`, path, { code: errorCode(err), cause: err });
  }
}

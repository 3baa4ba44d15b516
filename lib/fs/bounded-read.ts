// Reading input files whose path a user gives (edit files, batch files) and standard input, with a size limit.
// A path may name anything: `/dev/zero` (endless), a FIFO (blocks until a writer appears, possibly never), a
// symlink `x.safetensors` to either. Only regular files are read, after links are followed; the file is opened
// non-blocking so that opening a FIFO returns at once and is then refused by name, and at most `limit` bytes are
// read, so that a file growing while it is read cannot exhaust memory either. Failures are FileErrors naming the
// path ("cannot read x.safetensors: it is a FIFO, not a regular file").
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { errorCode, FileError, systemReason } from './file-error.js';

/** 1 GiB: the largest batch file (`edit --batch`) read; ~10⁷ lines of JSON, far more than a batch is run with. */
export const MAX_BATCH_FILE_BYTES = 1024 ** 3;

/** 16 MiB: the most `tokenize` reads from standard input (~10⁵ prompts; CLIP sees 77 tokens of each). */
export const MAX_STDIN_BYTES = 16 * 1024 ** 2;

function kindOf(s: Stats): string {
  if (s.isDirectory()) return 'a folder';
  if (s.isFIFO()) return 'a FIFO';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

function sizeText(bytes: number): string {
  return bytes >= 1024 ** 3 && bytes % 1024 ** 3 === 0
    ? `${bytes / 1024 ** 3} GiB`
    : bytes >= 1024 ** 2 && bytes % 1024 ** 2 === 0
      ? `${bytes / 1024 ** 2} MiB`
      : `${bytes} bytes`;
}

/**
 * The bytes of the regular file `path` (symlinks followed), at most `limit` of them; a FileError naming `path`
 * when it is missing, is a folder, FIFO, device or socket, or is larger than `limit`.
 * Example: `readRegularFileSync('edits.jsonl', MAX_BATCH_FILE_BYTES)`.
 */
export function readRegularFileSync(path: string, limit: number): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever; it does nothing to a regular file.
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    throw new FileError(`cannot read ${path}: ${systemReason(err)}`, path, { code: errorCode(err), cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new FileError(`cannot read ${path}: it is ${kindOf(st)}, not a regular file`, path);
    if (st.size > limit)
      throw new FileError(`cannot read ${path}: it has ${st.size} bytes, more than the limit of ${sizeText(limit)}`, path);
    // Read to the end rather than trust st.size (the file may change meanwhile), but never past the limit.
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(Math.max(st.size - total, 64 * 1024), limit + 1 - total, 64 * 1024 * 1024));
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(n === buf.length ? buf : buf.subarray(0, n));
      total += n;
      if (total > limit) throw new FileError(`cannot read ${path}: it grew past the limit of ${sizeText(limit)} while being read`, path);
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
  } catch (err) {
    if (err instanceof FileError) throw err;
    throw new FileError(`cannot read ${path}: ${systemReason(err)}`, path, { code: errorCode(err), cause: err });
  } finally {
    closeSync(fd);
  }
}

/**
 * All of `stream` (standard input) as bytes, refusing more than `limit`: `tokenize < /dev/zero` stops with an
 * error instead of growing without bound. Example: `await readStreamBounded(process.stdin, MAX_STDIN_BYTES, 'standard input')`.
 */
export async function readStreamBounded(stream: AsyncIterable<unknown>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of stream) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(String(c), 'utf8');
    total += b.length;
    if (total > limit) throw new FileError(`cannot read ${what}: more than the limit of ${sizeText(limit)}`, what);
    chunks.push(b);
  }
  return Buffer.concat(chunks, total);
}

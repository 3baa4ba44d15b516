// The error of the file helpers in lib/fs: a read or write that failed, with the file it was about. Node's own
// messages name the syscall and, for an atomic write, the temporary sibling; this one names the file the caller
// asked for and keeps Node's error code (ENOSPC, EACCES, ENOENT, …) for callers that decide on it.
import { TimeEditError } from '../errors.js';

/**
 * A file could not be read, parsed or written; `path` is the file the caller named.
 * Example: `catch (err) { if (err instanceof FileError && err.code === 'ENOSPC') … }`.
 */
export class FileError extends TimeEditError {
  /** Node's error code when a system call failed (`'ENOSPC'`, `'EACCES'`, …). */
  readonly code: string | undefined;

  constructor(
    message: string,
    readonly path: string,
    options: { code?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
  }
}

/** The `code` of a Node system error (`'ENOENT'`), or undefined for any other value. */
export function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/**
 * Why a system call failed, without the syscall and path Node appends ("EACCES: permission denied, open
 * '/x/.a.1.ff.tmp'" becomes "EACCES: permission denied", "ENOSPC: no space left on device, write" becomes
 * "ENOSPC: no space left on device"): the caller's message names the file.
 * Example: `systemReason(err)` → `'ENOSPC: no space left on device'`.
 */
export function systemReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // Node's form is "CODE: description, syscall" plus " 'path'" (and " -> 'dest'") when the call had one.
  return errorCode(err) === undefined ? message : message.replace(/, [a-z]+( '.*)?$/s, '');
}

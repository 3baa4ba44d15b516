// Stack size for threads that create onnxruntime sessions. onnxruntime (checked with onnxruntime-node 1.30 on
// Linux) reads the process's command line (/proc/self/cmdline) when it creates a session and walks it with a
// recursive std::regex, so the native stack it needs grows with the command line: about 340 bytes per byte
// measured here. A worker's default 4 MB stack overflows at about 12 KB of command line — thirty 400-character
// prompts — and the whole process dies with SIGSEGV. The session worker's stack is therefore sized to the command
// line; the main thread's cannot be, so sessions made there refuse command lines that would overflow it.
import { readFileSync } from 'node:fs';

/** Stack bytes reserved per byte of command line: three times the measured need. */
const STACK_BYTES_PER_COMMAND_LINE_BYTE = 1024;
/** Command-line bytes a main thread with the usual 8 MB stack takes safely (it overflowed at ~24 KB). */
export const MAIN_THREAD_COMMAND_LINE_LIMIT = 12 * 1024;

/** Bytes of this process's command line (0 where /proc is not there: other systems). */
export function commandLineBytes(): number {
  try {
    return readFileSync('/proc/self/cmdline').length;
  } catch {
    return 0;
  }
}

/** resourceLimits.stackSizeMb for a worker that creates onnxruntime sessions: at least 16 MB. */
export function sessionWorkerStackMb(bytes: number = commandLineBytes()): number {
  return 16 + Math.ceil((bytes * STACK_BYTES_PER_COMMAND_LINE_BYTE) / 2 ** 20);
}

/** Throws a clear error instead of letting onnxruntime overflow the main thread's stack. */
export function assertCommandLineFitsMainThread(what: string, bytes: number = commandLineBytes()): void {
  if (bytes > MAIN_THREAD_COMMAND_LINE_LIMIT) {
    throw new Error(
      `${what}: this process's command line is ${Math.round(bytes / 1024)} KB; onnxruntime crashes (stack overflow) ` +
        `creating a session on the main thread when it is over ${MAIN_THREAD_COMMAND_LINE_LIMIT / 1024} KB: pass long prompts from a file or stdin instead`,
    );
  }
}

// Stack size for threads that create onnxruntime sessions. onnxruntime (checked with onnxruntime-node 1.30 on
// Linux) reads the process's command line (/proc/self/cmdline) when it creates a session and walks it with a
// recursive std::regex, so the native stack it needs grows with the command line: about 340 bytes per byte
// measured here. A worker's default 4 MB stack overflows at about 12 KB of command line — thirty 400-character
// prompts — and the whole process dies with SIGSEGV. The session worker's stack is therefore sized to the command
// line. Every session of the project lives in such a worker (the pipeline's and the CLIP judge's).
import { readFileSync } from 'node:fs';

/** Stack bytes reserved per byte of command line: three times the measured need. */
const STACK_BYTES_PER_COMMAND_LINE_BYTE = 1024;

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

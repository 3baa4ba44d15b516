// Writing a whole buffer at a file position: fs.writeSync may write fewer bytes than asked (Node's documentation
// of fs.write), so a positional write loops until every byte is down. Shared by the ONNX writer, the checkpoint
// text encoder's weight file and weights mode's in-place K/V patch.
import { writeSync } from 'node:fs';

/**
 * Writes all of `bytes` to the open file `fd` at byte `position` (the file position is not moved).
 * Example: `const fd = openSync('model.onnx', 'r+'); writeAllAt(fd, patched, offset); closeSync(fd);`
 */
export function writeAllAt(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}

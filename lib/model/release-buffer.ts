// Frees an ArrayBuffer's memory now instead of at some later garbage collection. A model's bytes (hundreds of MB
// to GB for an SD UNet) that are dropped while onnxruntime creates a session are otherwise still resident at
// that moment: V8 collects large external buffers only when its own heap asks for a full collection, which an
// event loop waiting on a worker rarely does (docs/memory.md). Detaching the buffer releases its backing store
// as soon as nothing else references it; every view of it then reads as empty, so a stale use fails loudly.
import { MessageChannel } from 'node:worker_threads';

type Transferable = ArrayBuffer & { transfer?: (length?: number) => ArrayBuffer };

/**
 * Releases `buffer`'s memory (within the event loop's next turn) and detaches it: its byteLength becomes 0 and
 * every typed array over it becomes empty. Only for a buffer its caller owns outright (no other code may read
 * it afterwards). A SharedArrayBuffer, a buffer that is already detached and one of Node's untransferable pooled
 * buffers are left as they are.
 * Example: `const bytes = await readFile(path); use(bytes); releaseArrayBuffer(bytes.buffer)`.
 */
export function releaseArrayBuffer(buffer: ArrayBufferLike): void {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0) return;
  const b = buffer as Transferable;
  if (typeof b.transfer === 'function') {
    // ArrayBuffer.prototype.transfer (ES2024; Node 21+): the old backing store goes with a zero-length result.
    b.transfer(0);
    return;
  }
  // Node 20: transferring the buffer into a message detaches it; the message, and the memory with it, is dropped
  // when the channel closes.
  const { port1, port2 } = new MessageChannel();
  try {
    port1.postMessage(null, [buffer]);
  } catch {
    // A buffer Node marks untransferable (its small-Buffer pool): left to the garbage collector.
  } finally {
    port1.close();
    port2.close();
  }
}

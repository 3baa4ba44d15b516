// The UNet graph an edit context reads when it needs it, instead of holding the file's bytes for its whole life.
// A self-contained UNet's model.onnx is its weights (0.9 GB for a half-width SD UNet, 3.4 GB for SD 1.5 in
// float32): held by the context, it is a second copy of the weights beside the UNet session's own while every
// image is sampled (docs/memory.md, "What each edit mode costs"). The file is checked on every read to be the one
// the context was opened on (size and modification time), so an edit is never applied to another model.
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ModelError } from '../errors.js';
import { decodeModel, loadModel, type LoadedModel } from '../model/onnx/index.js';
import { releaseArrayBuffer } from '../model/release-buffer.js';

/** A read of the graph and how to give its memory back: `release()` frees it unless it is the shared copy. */
export interface UnetRead {
  unet: LoadedModel;
  release(): void;
}

/**
 * The UNet at one path, read on demand. `shared` is the copy handed out to callers (read once, kept until
 * `drop()`); `read()` gives one to use and release at once (prepareEditedGeneration: patched, written for the
 * session, then freed before the session is created).
 * Example: `const g = UnetGraph.adopt(await loadModel(path)); g.drop(true); g.shared.model.graph` (read again).
 */
export class UnetGraph {
  private cached: LoadedModel | null = null;

  private constructor(
    readonly path: string,
    private readonly size: number,
    private readonly mtimeMs: number,
  ) {}

  /** Takes a model just read from disk as the context's (still held: `release()` frees it). */
  static adopt(loaded: LoadedModel): UnetGraph {
    const s = statSync(loaded.path);
    const g = new UnetGraph(loaded.path, s.size, s.mtimeMs);
    g.cached = loaded;
    return g;
  }

  /** Whether the shared copy is in memory now (for tests and memory diagnostics). */
  get held(): boolean {
    return this.cached !== null;
  }

  /** The shared copy: read now (synchronously) if it is not held. */
  get shared(): LoadedModel {
    this.cached ??= this.readSync();
    return this.cached;
  }

  /** A copy to use now: the shared one when held (release() then keeps it), else a fresh read that release() frees. */
  async read(): Promise<UnetRead> {
    if (this.cached !== null) return { unet: this.cached, release: () => undefined };
    this.verify();
    const unet = await loadModel(this.path);
    this.verify();
    return { unet, release: () => releaseArrayBuffer(unet.bytes.buffer) };
  }

  /**
   * Stops holding the shared copy. `free`: also free its memory now, which empties every tensor of it; only when
   * no caller can still hold it (the context's own read at open).
   */
  drop(free = false): void {
    const c = this.cached;
    this.cached = null;
    if (free && c !== null) releaseArrayBuffer(c.bytes.buffer);
  }

  private readSync(): LoadedModel {
    this.verify();
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(this.path);
    } catch (err) {
      throw new ModelError(this.path, `cannot read the UNet ${this.path} again: ${(err as Error).message}`);
    }
    return { model: decodeModel(bytes), dir: dirname(resolve(this.path)), path: this.path, bytes };
  }

  /** Throws a ModelError unless the file is still the one first read (same size and modification time). */
  verify(): void {
    let s: { size: number; mtimeMs: number };
    try {
      s = statSync(this.path);
    } catch (err) {
      throw new ModelError(this.path, `cannot read the UNet ${this.path} again: ${(err as Error).message}`);
    }
    if (s.size !== this.size || s.mtimeMs !== this.mtimeMs)
      throw new ModelError(
        this.path,
        `${this.path} changed since the edit context was opened (the edit was checked against the old file): open the model again`,
      );
  }
}

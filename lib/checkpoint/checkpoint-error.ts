// The error of reading a checkpoint (a safetensors file or a diffusers folder): a ModelError, so callers and the
// CLI treat it as any unusable model (exit 1), that also names the tensor it is about when there is one.
import { ModelError } from '../errors.js';

/**
 * A checkpoint file that cannot be used: not safetensors, damaged, of another model family (SD 2.x, SDXL,
 * inpainting), or missing a tensor an edit needs. `file` is the path; `tensor` the tensor's name when the problem
 * is one tensor's. Example: `catch (err) { if (err instanceof CheckpointError) console.error(err.file, err.tensor) }`.
 */
export class CheckpointError extends ModelError {
  override readonly name = 'CheckpointError';
  readonly tensor: string | undefined;

  constructor(file: string, message: string, options: { tensor?: string; cause?: unknown } = {}) {
    super(file, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.tensor = options.tensor;
  }
}

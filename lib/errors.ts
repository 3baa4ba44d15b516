// The error vocabulary of the time-edit library: one base class, and the few kinds of failure a caller may want to
// tell apart (a bad argument, a bad model, an output folder in use, a backend that cannot run). Messages name the
// argument or the file and the value received, in the library's own terms (option names such as `steps`, paths),
// never a command-line flag: the library knows nothing of flags or exit codes. lib/cli/errors.ts maps these
// classes to exit codes and restates argument names as flags; docs/errors.md lists the classes.
// This module is the bottom layer: it imports nothing.

/**
 * Base class of every error the library throws on purpose; `name` is the subclass's name.
 * Example: `try { await loadPipeline(dir) } catch (err) { if (err instanceof TimeEditError) console.error(err.message) }`.
 */
export class TimeEditError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A TIME edit that cannot be computed, applied, saved or loaded (bad edit file, prompts without aligned tokens to
 * edit, a solve that failed). Defined here rather than in lib/edit/ so the solver layer below the edit layer can throw
 * it too; lib/edit/edit.ts re-exports it.
 * Example: `try { await loadEdit('out/edit.safetensors') } catch (err) { if (err instanceof EditError) console.error(err.message) }`.
 */
export class EditError extends TimeEditError {
  override readonly name = 'EditError';
}

/** A value as a message shows it: strings quoted, numbers as written, arrays and objects by their kind. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (value === null || typeof value !== 'object') return typeof value === 'function' ? 'a function' : String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (ArrayBuffer.isView(value))
    return 'length' in value ? `a ${value.constructor.name} of ${String(value.length)} values` : `a ${value.constructor.name}`;
  return 'an object';
}

/**
 * A library function was given a bad argument: `argument` names it as the function's documentation does
 * (`'steps'`, `'device'`, `'conditioning.cond.encoderHiddenStates'`), and the message names it too, followed by
 * what is wrong. `received` is the offending value when there is one.
 * Example: `new InputError('prompts', 'prompts must not be empty', { received: [] })`.
 */
export class InputError extends TimeEditError {
  readonly argument: string;
  readonly received: unknown;

  constructor(argument: string, message: string, options: { received?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.argument = argument;
    this.received = options.received;
  }
}

/**
 * The usual InputError, worded the way sharp's `invalidParameterError` does it: "<argument> must be <expected>,
 * got <value>". Example: `invalidInput('steps', 'a positive integer', 0)` → "steps must be a positive integer, got 0".
 */
export function invalidInput(argument: string, expected: string, received: unknown): InputError {
  return new InputError(argument, `${argument} must be ${expected}, got ${describeValue(received)}`, { received });
}

/**
 * A model folder, config, graph or tokenizer file is missing, unreadable, corrupt or of a kind this library does not
 * support. `file` is the path (or, for a file inside a pipeline folder, the path relative to it) the message is about.
 * Example: `new ModelError('/m/unet/model.onnx', '/m/unet/model.onnx is an onnxruntime "GPU-optimized" UNet')`.
 */
export class ModelError extends TimeEditError {
  constructor(
    readonly file: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Who holds an output folder's lock, as its lock file says. */
export interface OutputHolder {
  pid: number;
  host: string;
  /** whether `host` is this machine (the pid is then checked to be alive) */
  onThisHost: boolean;
  /** what the holder runs, e.g. `'eval timed'` */
  command: string;
}

/**
 * An output folder is locked by another live run (lib/fs/out-lock.ts). Example message: "/tmp/out is in use by
 * another time-edit run (process 4242, eval timed); if no such run exists, delete /tmp/out/.time-edit.lock".
 */
export class OutputInUseError extends TimeEditError {
  constructor(
    readonly folder: string,
    readonly holder: OutputHolder,
    readonly lockFile: string,
  ) {
    super(`${folder} is in use by another time-edit run (${describeHolder(holder)}); if no such run exists, delete ${lockFile}`);
  }
}

/** "process 4242, eval timed", or "process 4242 on otherhost, eval timed" for another machine. */
export function describeHolder(holder: OutputHolder): string {
  return `${holder.onThisHost ? `process ${holder.pid}` : `process ${holder.pid} on ${holder.host}`}, ${holder.command}`;
}

/**
 * An execution backend was asked for and cannot run here (e.g. onnxruntime-node's CUDA provider is not installed).
 * `option` and `value` name the choice that asked for it, as the library calls it (`device`, `'cuda'`).
 * Example: `new BackendUnavailableError('device', 'cuda', "onnxruntime-node's CUDA execution provider is not installed")`.
 */
export class BackendUnavailableError extends TimeEditError {
  constructor(
    readonly option: string,
    readonly value: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

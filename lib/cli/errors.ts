// How an error reaches the person at the terminal: one line `time-edit: <message>` and an exit code, decided here
// for every command (lib/cli/main.ts calls describeFailure; docs/errors.md has the table).
//
// Exit 2, the command line is wrong:
//   UsageError (unknown command or flag, a malformed or out-of-range flag value, flags that cannot be combined),
//   InputError (a library argument check failing on a value the user gave), AlignmentError (the prompts given
//   cannot be aligned), OutputInUseError (--out is held by another run).
// Exit 1, the work failed: everything else. ModelError (a missing, corrupt or unsupported model, including a
//   --model path that does not exist), EditError and SafetensorsError (a bad edit file), DatasetError, RunLogError,
//   OnnxError, CrossAttentionError, BackendUnavailableError, I/O errors, and any error this rule does not know.
// Errors of lib/errors.ts's vocabulary (TimeEditError and its subclasses) name their problem and print no stack.
// An unknown error is printed the same way plus a line pointing at TIME_EDIT_DEBUG=1, which prints the stack of any
// error but a UsageError.
// Advice that mentions flags ("pick another --out", "--device cpu") is added here or by the command, never by the
// library: a command restates a library error with `restate`, which keeps the original's exit code.
import { BackendUnavailableError, describeHolder, InputError, OutputInUseError, TimeEditError } from '../errors.js';
import { AlignmentError } from '../edit/align.js';

/** The command line is wrong: a bad flag, a missing argument, flags that cannot be combined (exit 2). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A library error said again in the terminal's terms (a flag named, advice added); it exits as `cause` does. */
export class RestatedError extends Error {
  override readonly name = 'RestatedError';

  constructor(
    message: string,
    override readonly cause: unknown,
  ) {
    super(message, { cause });
  }
}

/**
 * A command's wording of a library error. Example: `throw restate(err, \`cannot load the CLIP judge: ${err.message}\`)`
 * prints that line and exits with the code `err` would have given.
 */
export function restate(err: unknown, message: string): RestatedError {
  return new RestatedError(message, err);
}

/** Library option name → the flag of a command that sets it (`{ batchSize: '--batch' }`), for its messages. */
export type OptionFlags = Readonly<Record<string, string>>;

/**
 * `err` in a command's terms: an InputError whose message starts with the option's name starts with its flag
 * instead ("height must be …" → "--height must be …"); a BackendUnavailableError names the flag and its value.
 * Anything else is returned as it is. Example: `throw inTermsOfFlags(err, { steps: '--steps' })`.
 */
export function inTermsOfFlags(err: unknown, flags: OptionFlags | undefined): unknown {
  if (flags === undefined) return err;
  if (err instanceof InputError) {
    const flag = flags[err.argument];
    const rest = err.message.slice(err.argument.length);
    if (flag !== undefined && err.message.startsWith(err.argument) && /^[\s:(]/.test(rest)) return restate(err, flag + rest);
  }
  if (err instanceof BackendUnavailableError) {
    const flag = flags[err.option];
    if (flag !== undefined)
      return restate(err, `${flag} ${err.value}: ${err.message}${err.option === 'device' ? `, or use ${flag} cpu` : ''}`);
  }
  return err;
}

/** What the terminal shows for an error, and the exit code. `known`: the error is of a kind this rule lists. */
export interface Failure {
  exitCode: 1 | 2;
  message: string;
  known: boolean;
}

/**
 * The one mapping from errors to exit codes (see the header). Example: `describeFailure(new ModelError(f, m))` →
 * `{ exitCode: 1, message: m, known: true }`.
 */
export function describeFailure(err: unknown): Failure {
  if (err instanceof RestatedError) return { ...describeFailure(err.cause), message: err.message };
  if (err instanceof UsageError) return { exitCode: 2, message: err.message, known: true };
  if (err instanceof OutputInUseError) {
    const message = `${err.folder} is in use by another time-edit run (${describeHolder(err.holder)}); wait for it to finish or pick another --out (if no such run exists, delete ${err.lockFile})`;
    return { exitCode: 2, message, known: true };
  }
  if (err instanceof InputError || err instanceof AlignmentError) return { exitCode: 2, message: err.message, known: true };
  if (err instanceof TimeEditError) return { exitCode: 1, message: err.message, known: true };
  return { exitCode: 1, message: err instanceof Error ? err.message : String(err), known: false };
}

/** The stack TIME_EDIT_DEBUG=1 prints: the original error's, for a restated one. */
export function debugStack(err: unknown): string {
  const original = err instanceof RestatedError ? err.cause : err;
  return original instanceof Error ? (original.stack ?? original.message) : String(original);
}

// Errors meant for the person at the terminal: the CLI prints their message as one line and exits non-zero,
// without a stack trace. Anything else that escapes a command is a bug and is printed with its stack.
export class UsageError extends Error {
  override readonly name = 'UsageError';
  constructor(message: string, readonly exitCode = 2) {
    super(message);
  }
}

// Flag parsing with the CLI's conventions, shared by every command: node:util's parseArgs, and a bad flag
// becomes a UsageError (one line, exit 2) followed by the command's usage text.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './errors.js';

export function parseCommandLine<const T extends ParseArgsConfig>(config: T, usage: string): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${usage}`);
  }
}

/**
 * True, after printing the usage text, when the command line asked for it (`--help`/`-h`): the command then
 * returns without doing anything. Example: `if (helpRequested(parsed.values, usage)) return;`.
 */
export function helpRequested(values: { help?: boolean | undefined }, usage: string): boolean {
  if (values.help !== true) return false;
  console.log(usage);
  return true;
}

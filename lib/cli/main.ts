#!/usr/bin/env node
// Entry point of the `time-edit` command: dispatches to one module per command, loaded on demand so that
// `tokenize` never pays for onnxruntime and `bench solve` never loads a model. Every error ends in the one
// mapping of lib/cli/errors.ts (exit 2: the command line is wrong; exit 1: the work failed).
import { debugStack, describeFailure, inTermsOfFlags, UsageError, type OptionFlags } from './errors.js';

type CommandModule = {
  run(args: string[]): Promise<void>;
  summary: string;
  /** the command's flags for library option names, so that library messages name the flag (lib/cli/errors.ts) */
  optionFlags?: OptionFlags;
};

const commands: Record<string, () => Promise<CommandModule>> = {
  generate: () => import('./commands/generate.js'),
  tokenize: () => import('./commands/tokenize.js'),
  edit: () => import('./commands/edit.js'),
  eval: () => import('./commands/eval.js'),
  bench: () => import('./commands/bench/index.js'),
  worker: () => import('./commands/worker.js'),
  queue: () => import('./commands/queue.js'),
};

async function printHelp(): Promise<void> {
  const lines = ['usage: time-edit <command> [options]   (time-edit <command> --help for its options)', '', 'commands:'];
  for (const [name, load] of Object.entries(commands)) {
    let summary = '(not available in this build)';
    try {
      summary = (await load()).summary;
    } catch {
      // A command module that fails to load is reported when it is run, not in the overview.
    }
    lines.push(`  ${name.padEnd(10)} ${summary}`);
  }
  console.log(lines.join('\n'));
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    await printHelp();
    return;
  }
  const load = commands[name];
  if (load === undefined) throw new UsageError(`unknown command '${name}'; commands: ${Object.keys(commands).join(', ')}`);
  const command = await load();
  try {
    await command.run(rest);
  } catch (err) {
    throw inTermsOfFlags(err, command.optionFlags);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const failure = describeFailure(err);
  process.exitCode = failure.exitCode;
  // Errors name their problem (a missing file, a bad model, an unavailable backend); a stack trace would bury
  // that line. TIME_EDIT_DEBUG=1 adds it for bug reports.
  console.error(`time-edit: ${failure.message}`);
  if (process.env.TIME_EDIT_DEBUG === '1' && !(err instanceof UsageError)) console.error(debugStack(err));
  else if (!failure.known) console.error('(set TIME_EDIT_DEBUG=1 to see where it was thrown)');
});

import { join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { defaultModelDir } from '../../model/paths.js';
import { ClipTokenizer } from '../../model/tokenizer.js';
import { MAX_STDIN_BYTES, readStreamBounded } from '../../fs/bounded-read.js';

export const summary = 'print the 77 CLIP token ids of each prompt (SD padding and truncation), one JSON array per line';

const usage = `usage: time-edit tokenize [--model PATH | --tokenizer DIR] [--tokens] PROMPT…
       (no PROMPT: prompts are read from stdin, one per line)

  --model PATH      pipeline folder whose tokenizer/ to use (default: the embedded model)
  --tokenizer DIR   tokenizer folder (vocab.json + merges.txt, or tokenizer.json)
  --tokens          print {"ids", "tokens", "truncated"} objects instead of bare id arrays

example: time-edit tokenize --tokenizer ../shared/data/clip-tokenizer "a photo of a cat"
  -> [49406,320,1125,539,320,2368,49407,49407,…]`;

/** Standard input, at most MAX_STDIN_BYTES (16 MiB): `tokenize < /dev/zero` stops with an error instead of growing without bound. */
async function readStdin(): Promise<string> {
  return (await readStreamBounded(process.stdin, MAX_STDIN_BYTES, 'standard input')).toString('utf8');
}

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      allowPositionals: true,
      options: {
        model: { type: 'string' },
        tokenizer: { type: 'string' },
        tokens: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const { values, positionals } = parsed;
  if (helpRequested(values, usage)) return;
  if (values.model !== undefined && values.tokenizer !== undefined) throw new UsageError('give --model or --tokenizer, not both');
  const dir =
    values.tokenizer !== undefined
      ? resolve(values.tokenizer)
      : join(values.model !== undefined ? resolve(values.model) : defaultModelDir, 'tokenizer');
  let prompts = positionals;
  if (prompts.length === 0) {
    if (process.stdin.isTTY) throw new UsageError(`no prompts given\n${usage}`);
    prompts = (await readStdin()).split(/\r?\n/).filter((l) => l.trim() !== '');
    if (prompts.length === 0) throw new UsageError('no prompts on stdin');
  }
  const tok = await ClipTokenizer.fromFolder(dir);
  const lines: string[] = [];
  prompts.forEach((p, i) => {
    const e = tok.encode(p);
    if (e.truncated)
      console.error(`time-edit: warning: prompt ${i + 1} has more than ${tok.maxLength - 2} tokens and was truncated (as SD does)`);
    const ids = Array.from(e.ids);
    lines.push(
      values.tokens === true
        ? JSON.stringify({ ids, tokens: ids.map((id) => tok.tokenString(id)), truncated: e.truncated })
        : JSON.stringify(ids),
    );
  });
  process.stdout.write(`${lines.join('\n')}\n`);
}

// `time-edit tokenize`: the 77 CLIP token ids of each prompt, as SD 1.x pads and truncates them, from the tokenizer
// of a model (an ONNX pipeline folder's or a diffusers folder's tokenizer/) or of a tokenizer folder.
import { join, resolve } from 'node:path';
import { detectModelPath } from '../../checkpoint/open-checkpoint.js';
import { UsageError } from '../errors.js';
import { helpRequested, parseCommandLine } from '../flags.js';
import { defaultModelDir } from '../../model/paths.js';
import { ClipTokenizer } from '../../model/tokenizer.js';
import { MAX_STDIN_BYTES, readStreamBounded } from '../../fs/bounded-read.js';

export const summary = 'print the 77 CLIP token ids of each prompt (SD padding and truncation), one JSON array per line';

const usage = `usage: time-edit tokenize [--model PATH | --tokenizer DIR] [--tokens] PROMPT…
       (no PROMPT: prompts are read from stdin, one per line)

  --model PATH      model whose tokenizer/ to use: an ONNX pipeline folder or a diffusers folder (default: the
                    embedded model); a single-file .safetensors checkpoint holds no tokenizer: give --tokenizer
  --tokenizer DIR   tokenizer folder (vocab.json + merges.txt, or tokenizer.json)
  --tokens          print {"ids", "tokens", "truncated"} objects instead of bare id arrays

example: time-edit tokenize --tokenizer ~/sd15/tokenizer "a photo of a cat"   (SD 1.x's CLIP BPE files)
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
  if (values.model !== undefined && detectModelPath(resolve(values.model)) === 'single-file')
    throw new UsageError(
      `--model ${values.model} is a single-file checkpoint, which holds no tokenizer: give --tokenizer DIR (the CLIP tokenizer's vocab.json + merges.txt, e.g. an SD 1.x diffusers folder's tokenizer/)`,
    );
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

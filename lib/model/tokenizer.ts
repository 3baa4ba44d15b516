// CLIP tokenizer as Stable Diffusion 1.x uses it. The BPE itself is @huggingface/tokenizers; SD folders ship
// vocab.json + merges.txt (no tokenizer.json), so the fast-tokenizer description is synthesized here the way
// transformers' CLIPConverter builds it, and SD's padding/truncation (which the library lacks) is done by hand.
// merges.txt is checked line by line (UTF-8, two symbols a line) because the BPE takes any line as a merge: a
// damaged line would silently change every tokenization instead of failing.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelError } from '../errors.js';
import { FileError } from '../fs/file-error.js';
import { readJsonFile } from '../fs/json-file.js';

const BOS_TOKEN = '<|startoftext|>';
const EOS_TOKEN = '<|endoftext|>';
// transformers' CLIP pre-tokenizer pattern: special tokens, English contractions, letter runs, single digits,
// runs of other non-space characters.
const CLIP_SPLIT = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

export interface Encoded {
  /** maxLength ids: bos, at most maxLength-2 prompt tokens, eos, then eos as padding (SD 1.x pads with eos). */
  ids: Int32Array;
  /** true when the prompt had more than maxLength-2 tokens and the tail was dropped. */
  truncated: boolean;
}

/** Whether `path` exists; one that exists but cannot be looked at (EACCES, a file as a folder) is a ModelError saying so. */
async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new ModelError(path, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** A tokenizer file's JSON; one that cannot be read or parsed is a ModelError naming it. */
async function readJson(path: string): Promise<unknown> {
  try {
    return await readJsonFile(path);
  } catch (err) {
    throw err instanceof FileError ? new ModelError(err.path, err.message, { cause: err }) : err;
  }
}

/**
 * The merges of a merges.txt: lines of exactly two space-separated symbols, after an optional "#version" header;
 * empty lines are skipped. A line that is not valid UTF-8 or not two symbols is a ModelError naming the file and
 * line. Example: `parseMerges(Buffer.from('#version: 0.2\nc i\n'), 'merges.txt')` → ['c i'].
 */
export function parseMerges(bytes: Uint8Array, path: string): string[] {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const merges: string[] = [];
  let start = 0;
  for (let lineNo = 1; start <= bytes.length; lineNo++) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    let line: string;
    try {
      line = decoder.decode(bytes.subarray(start, end));
    } catch {
      throw new ModelError(path, `${path} line ${lineNo} is not valid UTF-8`);
    }
    start = end + 1;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (lineNo === 1 && line.startsWith('#version')) continue;
    if (line.trim() === '') continue;
    if (!/^[^\s]+ [^\s]+$/.test(line))
      throw new ModelError(
        path,
        `${path} line ${lineNo} is not a merge (two symbols separated by one space): ${JSON.stringify(line.length > 60 ? `${line.slice(0, 60)}…` : line)}`,
      );
    merges.push(line);
  }
  return merges;
}

/** The tokenizer.json transformers' CLIPConverter would write for this vocabulary and merge list. */
function clipTokenizerJson(vocab: Record<string, number>, merges: string[]): object {
  const special = (content: string): object => ({
    id: vocab[content],
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: true,
    special: true,
  });
  return {
    version: '1.0',
    added_tokens: [special(BOS_TOKEN), special(EOS_TOKEN)],
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: CLIP_SPLIT }, behavior: 'Removed', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: EOS_TOKEN,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

export class ClipTokenizer {
  private readonly idToToken: Map<number, string>;

  private constructor(
    private readonly inner: Tokenizer,
    readonly bos: number,
    readonly eos: number,
    readonly maxLength: number,
  ) {
    this.idToToken = new Map();
    for (const [token, id] of inner.get_vocab(true)) this.idToToken.set(id, token);
  }

  /**
   * Loads a tokenizer folder: vocab.json + merges.txt (SD 1.x layout) or tokenizer.json, plus the optional
   * tokenizer_config.json for model_max_length; a missing, unreadable or non-CLIP folder is a ModelError naming the
   * file. Example: `await ClipTokenizer.fromFolder('models/toy-shapes/tokenizer')`.
   */
  static async fromFolder(dir: string): Promise<ClipTokenizer> {
    if (!(await exists(dir))) throw new ModelError(dir, `tokenizer folder ${dir} does not exist`);
    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const jsonPath = join(dir, 'tokenizer.json');
    const configPath = join(dir, 'tokenizer_config.json');
    const config = (await exists(configPath)) ? ((await readJson(configPath)) as Record<string, unknown>) : {};
    let tokenizerJson: object;
    if ((await exists(vocabPath)) && (await exists(mergesPath))) {
      const vocab = await readJson(vocabPath);
      if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab))
        throw new ModelError(vocabPath, `${vocabPath} must map tokens to ids`);
      const bytes = await readFile(mergesPath).catch((err: unknown) => {
        throw new ModelError(mergesPath, `cannot read ${mergesPath}: ${(err as Error).message}`, { cause: err });
      });
      const merges = parseMerges(bytes, mergesPath);
      const v = vocab as Record<string, number>;
      if (v[BOS_TOKEN] === undefined || v[EOS_TOKEN] === undefined)
        throw new ModelError(vocabPath, `${vocabPath} lacks ${BOS_TOKEN} or ${EOS_TOKEN}: not a CLIP vocabulary`);
      tokenizerJson = clipTokenizerJson(v, merges);
    } else if (await exists(jsonPath)) {
      tokenizerJson = (await readJson(jsonPath)) as object;
    } else {
      throw new ModelError(dir, `tokenizer folder ${dir} has neither vocab.json + merges.txt nor tokenizer.json`);
    }
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw new ModelError(dir, `cannot build a tokenizer from ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const bos = inner.token_to_id(BOS_TOKEN);
    const eos = inner.token_to_id(EOS_TOKEN);
    if (bos === undefined || eos === undefined)
      throw new ModelError(dir, `tokenizer in ${dir} lacks ${BOS_TOKEN} or ${EOS_TOKEN}: not a CLIP tokenizer`);
    // Some configs carry a huge sentinel model_max_length; SD 1.x text encoders have 77 positions.
    const m = config.model_max_length;
    const maxLength = typeof m === 'number' && Number.isInteger(m) && m >= 3 && m <= 1024 ? m : 77;
    return new ClipTokenizer(inner, bos, eos, maxLength);
  }

  /** Token ids of the text alone: no bos/eos, no truncation. `tokenize("a circle")` -> [320, 7117]. */
  tokenize(text: string): number[] {
    return this.inner.encode(text, { add_special_tokens: false }).ids;
  }

  /** SD 1.x encoding: [bos, ≤ maxLength-2 tokens, eos, eos…] of length maxLength, as Int32Array. */
  encode(text: string): Encoded {
    const tokens = this.tokenize(text);
    const room = this.maxLength - 2;
    const ids = new Int32Array(this.maxLength).fill(this.eos);
    ids[0] = this.bos;
    const kept = Math.min(tokens.length, room);
    for (let i = 0; i < kept; i++) ids[i + 1] = tokens[i]!;
    return { ids, truncated: tokens.length > room };
  }

  /** The vocabulary string of an id, e.g. "circle</w>"; throws for ids outside the vocabulary. */
  tokenString(id: number): string {
    const s = this.idToToken.get(id);
    if (s === undefined) throw new RangeError(`token id ${id} is not in the vocabulary`);
    return s;
  }
}

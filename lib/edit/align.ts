// Token alignment between a source and a destination prompt, as the official TIME implementation does it
// (bahjat-kawar/time-diffusion, apply_time.py): both prompts tokenized with bos/eos and no padding, "an" read
// as "a"; each source token is matched to the next equal destination token (so words inserted in the
// destination, like "blue" in "a blue circle", are skipped); the source positions after its end token map to
// the destination positions right after the last match, in order, and once those run past the last position
// every remaining one maps to the last position (76). Prompts over 75 tokens are truncated as SD truncates them
// (the last position keeps the end token) and matches are clamped to the last position. Row i of the edit then
// pairs the source embedding at position i with the destination embedding at position map[i], all 77 positions.
import { TimeEditError } from '../errors.js';

/** The part of lib/model/tokenizer.ts's ClipTokenizer that alignment needs. */
export interface AlignTokenizer {
  /** Token ids of a text, without bos/eos or padding. */
  tokenize(text: string): number[];
  /** The vocabulary string of an id, e.g. "an</w>". */
  tokenString(id: number): string;
  readonly bos: number;
  readonly eos: number;
  /** Sequence length of the text encoder (77 for SD). */
  readonly maxLength: number;
}

export class AlignmentError extends TimeEditError {
  override readonly name = 'AlignmentError';
}

export interface Alignment {
  /** bos, tokens, eos of each prompt (after the "an" → "a" mapping and truncation). */
  sourceIds: number[];
  destinationIds: number[];
  /** map[i] = destination position paired with source position i; length maxLength. */
  map: Int32Array;
  /** True when a prompt was longer than maxLength − 2 tokens and was cut, as the SD pipeline does. */
  truncated: { source: boolean; destination: boolean };
}

/** The readable word of a token: its vocabulary string without CLIP's end-of-word marker. */
export function tokenWord(tok: AlignTokenizer, id: number): string {
  return tok
    .tokenString(id)
    .replace(/<\/w>$/, '')
    .trim();
}

function sequence(tok: AlignTokenizer, text: string, aId: number): { ids: number[]; full: number[]; truncated: boolean } {
  const raw = tok.tokenize(text);
  // CLIP maps out-of-vocabulary pieces to its end token (unk = eos): name the word instead of aligning garbage.
  if (raw.includes(tok.eos) || raw.includes(tok.bos)) {
    const word = text.split(/\s+/).find((w) => w !== '' && tok.tokenize(w).some((id) => id === tok.eos || id === tok.bos)) ?? text;
    throw new AlignmentError(`the word '${word}' in "${text}" is not in the model's vocabulary`);
  }
  const body = raw.map((id) => (tokenWord(tok, id) === 'an' ? aId : id));
  const room = tok.maxLength - 2;
  return { ids: [tok.bos, ...body.slice(0, room), tok.eos], full: [tok.bos, ...body, tok.eos], truncated: body.length > room };
}

/** The whitespace-separated word of `text` that produced body token `index`, when tokenizing word by word agrees. */
function sourceWordOf(tok: AlignTokenizer, text: string, index: number): string | undefined {
  const words = text.split(/\s+/).filter((w) => w !== '');
  let at = 0;
  for (const w of words) {
    const n = tok.tokenize(w).length;
    if (index < at + n) return w;
    at += n;
  }
  return undefined;
}

/** Aligns source to destination tokens. Throws AlignmentError naming the source word missing from the destination. */
export function alignTokens(tok: AlignTokenizer, source: string, destination: string): Alignment {
  if (source.trim() === '') throw new AlignmentError('the source prompt is empty');
  if (destination.trim() === '') throw new AlignmentError('the destination prompt is empty');
  const a = tok.tokenize('a');
  if (a.length !== 1) throw new AlignmentError('the tokenizer does not encode "a" as one token');
  const src = sequence(tok, source, a[0]!);
  const dst = sequence(tok, destination, a[0]!);
  const n = tok.maxLength;
  const map = new Int32Array(n);
  // The walk runs over the destination before truncation, so that a destination cut by SD's 77-token limit
  // still pairs each source token with its true counterpart; positions past the last one are clamped to it.
  let j = 0;
  src.ids.forEach((id, i) => {
    while (j < dst.full.length && dst.full[j] !== id) j++;
    if (j >= dst.full.length) {
      const word = id === tok.eos ? '<|endoftext|>' : (sourceWordOf(tok, source, i - 1) ?? tokenWord(tok, id));
      throw new AlignmentError(
        `cannot align "${source}" with "${destination}": the source word '${word}' does not appear in the destination ` +
          '(TIME needs every source word, in order, in the destination prompt; only insertions are allowed)',
      );
    }
    map[i] = Math.min(j++, n - 1);
  });
  for (let i = src.ids.length; i < n; i++) map[i] = Math.min(j++, n - 1);
  return { sourceIds: src.ids, destinationIds: dst.ids, map, truncated: { source: src.truncated, destination: dst.truncated } };
}

// Debiasing datasets in the format of TIMED_gender_test_set.csv: columns old, new, validation, ex1..ex5 (found by
// header name, any order). Each row edits an under-specified prompt ("an attendant") towards one attribute ("a female
// attendant"); the goal is that the unspecified prompt shows that attribute in half of the images, not all. The
// attribute is the word(s) `new` adds to `old`; the profession is `old` without its article. The same format holds the
// embedded model's analogue (models/toy-shapes/toy_debias.csv: shapes for professions, a colour for the attribute).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { DatasetError, parseCsv } from './timed-csv.js';

export const DEBIAS_COLUMNS = ['old', 'new', 'validation', 'ex1', 'ex2', 'ex3', 'ex4', 'ex5'] as const;

export interface DebiasEntry {
  /** 0-based row index in the file (after the header). */
  index: number;
  old: string;
  new: string;
  /** What `new` adds to `old` ("female"). */
  attribute: string;
  /** `old` without a leading article ("attendant"). */
  profession: string;
  /** The prompt the λ search measures on. */
  validation: string;
  /** ex1..ex5: the prompts the chosen λ is scored on. */
  examples: string[];
}

/** The words of `b` that `a` lacks, in order, when `b` is `a` with words inserted; undefined otherwise. */
function insertedWords(a: string, b: string): string[] | undefined {
  const x = a.split(/\s+/);
  const y = b.split(/\s+/);
  const added: string[] = [];
  let i = 0;
  for (const w of y) {
    if (i < x.length && w.toLowerCase() === x[i]!.toLowerCase()) i++;
    else added.push(w);
  }
  return i === x.length && added.length > 0 ? added : undefined;
}

/** "a"/"an" before the attribute follows the attribute ("an attendant" → "a female attendant"): ignored when comparing. */
function withoutArticle(prompt: string): string {
  return prompt.replace(/^(a|an|the)\s+/i, '');
}

/**
 * Entries of a debiasing CSV text; errors (DatasetError) name the file, the row and the column.
 *
 * @example
 *   parseDebias('old,new,validation,ex1,ex2,ex3,ex4,ex5\nan attendant,a female attendant,A photo of an attendant,…');
 *   // [{ index: 0, attribute: 'female', profession: 'attendant', validation: 'A photo of an attendant', … }]
 */
export function parseDebias(text: string, what = 'dataset'): DebiasEntry[] {
  const rows = parseCsv(text.replace(/^\uFEFF/, ''));
  if (rows.length === 0) throw new DatasetError(`${what} is empty`);
  const header = rows[0]!.map((h) => h.trim());
  const col = new Map(header.map((h, i) => [h, i]));
  const missing = DEBIAS_COLUMNS.filter((c) => !col.has(c));
  if (missing.length > 0)
    throw new DatasetError(`${what} lacks the debiasing column(s) ${missing.join(', ')} (header: ${header.join(',')})`);
  const data = rows.slice(1);
  if (data.length === 0) throw new DatasetError(`${what} has a header and no rows`);
  return data.map((row, r) => {
    const get = (name: string): string => {
      const v = (row[col.get(name)!] ?? '').trim();
      if (v === '') throw new DatasetError(`${what}: row ${r + 2} has an empty '${name}'`);
      return v;
    };
    const old = get('old');
    const neu = get('new');
    const added = insertedWords(withoutArticle(old), withoutArticle(neu));
    if (added === undefined)
      throw new DatasetError(`${what}: row ${r + 2}: '${neu}' is not '${old}' with an attribute word added (e.g. "a female attendant")`);
    return {
      index: r,
      old,
      new: neu,
      attribute: added.join(' '),
      profession: withoutArticle(old),
      validation: get('validation'),
      examples: [1, 2, 3, 4, 5].map((k) => get(`ex${k}`)),
    };
  });
}

/** A debiasing file's entries and the sha256 of its bytes (a resumed run checks the file is unchanged). */
export interface DebiasDataset {
  entries: DebiasEntry[];
  sha256: string;
}

/**
 * Reads a debiasing CSV; entries [begin, end) of it. Example: `await readDebiasDataset('TIMED_gender_test_set.csv')`.
 */
export async function readDebiasDataset(path: string, begin = 0, end?: number): Promise<DebiasDataset> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new DatasetError(`cannot read ${path}: ${(err as Error).message}`);
  }
  const all = parseDebias(bytes.toString('utf8'), path);
  const stop = end ?? all.length;
  if (!(Number.isInteger(begin) && begin >= 0 && Number.isInteger(stop) && stop > begin && stop <= all.length))
    throw new DatasetError(`${path}: entries [${begin}, ${stop}) are out of range (it has ${all.length})`);
  return { entries: all.slice(begin, stop), sha256: createHash('sha256').update(bytes).digest('hex') };
}

// TIMED dataset files: old,new,positive1..5,gt1..5,negative1..5,gn1..5 (columns found by header name, any order),
// RFC 4180 quoting ("a, b" and doubled quotes).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { TimeEditError } from '../errors.js';

export class DatasetError extends TimeEditError {
  override readonly name = 'DatasetError';
}

export interface TimedEntry {
  /** 0-based row index in the file (after the header). */
  index: number;
  old: string;
  new: string;
  positives: { test: string; gt: string }[];
  negatives: { test: string; gt: string }[];
}

/** Parses CSV text into rows of fields. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let i = 0;
  const endField = () => {
    row.push(field);
    field = '';
  };
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else field += c;
      i++;
      continue;
    }
    if (c === '"' && field === '') quoted = true;
    else if (c === ',') endField();
    else if (c === '\n' || c === '\r') {
      endField();
      if (!(row.length === 1 && row[0] === '')) rows.push(row);
      row = [];
      if (c === '\r' && text[i + 1] === '\n') i++;
    } else field += c;
    i++;
  }
  if (quoted) throw new DatasetError('unterminated quoted field');
  if (field !== '' || row.length > 0) {
    endField();
    rows.push(row);
  }
  return rows;
}

export const TIMED_COLUMNS = ['old', 'new', ...[1, 2, 3, 4, 5].flatMap((k) => [`positive${k}`, `gt${k}`, `negative${k}`, `gn${k}`])];

/** Entries [begin, end) of a TIMED CSV text; errors name the missing columns or the bad row. */
export function parseTimed(text: string, what = 'dataset', begin = 0, end?: number): TimedEntry[] {
  const rows = parseCsv(text.replace(/^\uFEFF/, ''));
  if (rows.length === 0) throw new DatasetError(`${what} is empty`);
  const header = rows[0]!.map((h) => h.trim());
  const col = new Map(header.map((h, i) => [h, i]));
  const missing = TIMED_COLUMNS.filter((c) => !col.has(c));
  if (missing.length > 0 && ['validation', 'ex1'].every((c) => header.includes(c))) {
    // TIMED_gender_test_set.csv: professions (old, new, validation, ex1..ex5), scored by the share of each gender
    // in the images, a different protocol from efficacy/generality/specificity.
    throw new DatasetError(
      `${what} is the TIMED gender set (columns old,new,validation,ex1..ex5: professions, judged by the gender ratio of the images); ` +
        '`eval timed` runs the efficacy/generality/specificity protocol of TIMED_test_set.csv, TIMED_test_set_filtered_SD14.csv and TIMED_validation_set.csv; ' +
        'the gender-ratio protocol is `time-edit eval debias FILE`',
    );
  }
  if (missing.length > 0) throw new DatasetError(`${what} lacks the TIMED column(s) ${missing.join(', ')} (header: ${header.join(',')})`);
  const data = rows.slice(1);
  const stop = end ?? data.length;
  if (!(Number.isInteger(begin) && begin >= 0 && Number.isInteger(stop) && stop > begin && stop <= data.length))
    throw new DatasetError(`${what}: entries [${begin}, ${stop}) are out of range (it has ${data.length})`);
  const out: TimedEntry[] = [];
  for (let r = begin; r < stop; r++) {
    const row = data[r]!;
    const get = (name: string): string => {
      const v = (row[col.get(name)!] ?? '').trim();
      if (v === '') throw new DatasetError(`${what}: row ${r + 2} has an empty '${name}'`);
      return v;
    };
    out.push({
      index: r,
      old: get('old'),
      new: get('new'),
      positives: [1, 2, 3, 4, 5].map((k) => ({ test: get(`positive${k}`), gt: get(`gt${k}`) })),
      negatives: [1, 2, 3, 4, 5].map((k) => ({ test: get(`negative${k}`), gt: get(`gn${k}`) })),
    });
  }
  return out;
}

/** A TIMED file's entries [begin, end) and the sha256 of its bytes (a resumed eval checks the file is unchanged). */
export interface TimedDataset {
  entries: TimedEntry[];
  sha256: string;
}

export async function readTimedDataset(path: string, begin = 0, end?: number): Promise<TimedDataset> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new DatasetError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return { entries: parseTimed(bytes.toString('utf8'), path, begin, end), sha256: createHash('sha256').update(bytes).digest('hex') };
}

export async function readTimed(path: string, begin = 0, end?: number): Promise<TimedEntry[]> {
  return (await readTimedDataset(path, begin, end)).entries;
}

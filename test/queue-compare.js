// Test helper of the queue tests: compares two output folders the way a user would check "the same output": every
// file present in both, byte for byte, except the timings that differ between any two runs (results.jsonl's …Ms and
// seconds, summary.json's seconds, results.csv's edit_ms column).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const timing = (k) => /Ms$/.test(k) || k === 'seconds';

function clean(v) {
  if (Array.isArray(v)) return v.map(clean);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k]) => !timing(k))
        .map(([k, x]) => [k, clean(x)]),
    );
  return v;
}

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function normal(rel, buf) {
  if (rel.endsWith('.jsonl'))
    return buf
      .toString()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.stringify(clean(JSON.parse(l))))
      .join('\n');
  if (rel.endsWith('summary.json')) return JSON.stringify(clean(JSON.parse(buf.toString())));
  if (rel.endsWith('.csv')) {
    const rows = buf
      .toString()
      .split('\n')
      .map((r) => r.split(','));
    const i = rows[0].indexOf('edit_ms');
    return rows.map((r) => r.filter((_, j) => j !== i).join(',')).join('\n');
  }
  return buf;
}

/** The relative names of files that differ or exist in one folder only ([] when the folders hold the same output). */
export function differences(a, b) {
  const fa = new Set(walk(a).map((f) => relative(a, f)));
  const fb = new Set(walk(b).map((f) => relative(b, f)));
  const out = [];
  for (const rel of fa) {
    if (!fb.has(rel)) {
      out.push(`missing ${rel}`);
      continue;
    }
    const x = normal(rel, readFileSync(join(a, rel)));
    const y = normal(rel, readFileSync(join(b, rel)));
    if (!(typeof x === 'string' ? x === y : x.equals(y))) out.push(`differs ${rel}`);
  }
  for (const rel of fb) if (!fa.has(rel)) out.push(`extra ${rel}`);
  return out;
}

/** The number of files under `dir`. */
export function fileCount(dir) {
  return walk(dir).length;
}

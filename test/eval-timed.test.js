// TIMED CSV parsing (quoting, column order, missing columns, ranges) and the result tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCsv, parseTimed, readTimedDataset, TIMED_COLUMNS } from '../lib/eval/timed-csv.js';
import { averageScores, resultsCsv, resultsHtml, colourJudge } from '../lib/eval/timed.js';

test('CSV: quoted fields with commas and doubled quotes, CRLF, trailing newline', () => {
  assert.deepEqual(parseCsv('a,b\r\n"x, y","say ""hi"""\n'), [
    ['a', 'b'],
    ['x, y', 'say "hi"'],
  ]);
  assert.deepEqual(parseCsv('a,b\n1,'), [
    ['a', 'b'],
    ['1', ''],
  ]);
  assert.throws(() => parseCsv('a\n"open'), /unterminated/);
});

function timedText(rows, columns = TIMED_COLUMNS) {
  return [columns.join(','), ...rows.map((r) => columns.map((c) => r[c] ?? `${c}-${r.old}`).join(','))].join('\n');
}

test('TIMED: columns by name in any order, entries and ranges, clear errors', () => {
  const shuffled = [...TIMED_COLUMNS].reverse();
  const text = timedText(
    [
      { old: 'a circle', new: 'a purple circle', gt1: 'a big purple circle' },
      { old: 'a square', new: 'an orange square' },
    ],
    shuffled,
  );
  const all = parseTimed(text, 't.csv');
  assert.equal(all.length, 2);
  assert.equal(all[0].old, 'a circle');
  assert.equal(all[0].positives[0].gt, 'a big purple circle');
  assert.equal(all[0].negatives[4].gt, 'gn5-a circle');
  assert.deepEqual(
    parseTimed(text, 't.csv', 1).map((e) => e.index),
    [1],
  );
  assert.throws(() => parseTimed(text, 't.csv', 0, 3), /out of range \(it has 2\)/);
  const missing = timedText(
    [{ old: 'x', new: 'y' }],
    TIMED_COLUMNS.filter((c) => c !== 'gn3' && c !== 'positive2'),
  );
  assert.throws(() => parseTimed(missing, 'm.csv'), /m\.csv lacks the TIMED column\(s\) positive2, gn3/);
  assert.throws(() => parseTimed(timedText([{ old: 'x', new: '' }]), 'e.csv'), /row 2 has an empty 'new'/);
});

test('TIMED file: entries of the range and the sha256 of the bytes (what a resumed eval checks); unreadable file named', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'timed-csv-'));
  try {
    const path = join(dir, 't.csv');
    const text = timedText([
      { old: 'a circle', new: 'a purple circle' },
      { old: 'a square', new: 'a purple square' },
    ]);
    writeFileSync(path, text);
    const d = await readTimedDataset(path, 1);
    assert.deepEqual(
      d.entries.map((e) => e.old),
      ['a square'],
    );
    assert.equal(d.sha256, createHash('sha256').update(text).digest('hex'));
    writeFileSync(path, `${text}\n`);
    assert.notEqual((await readTimedDataset(path, 1)).sha256, d.sha256, 'any byte changes the hash');
    await assert.rejects(readTimedDataset(join(dir, 'none.csv')), /cannot read .*none\.csv/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const toyTimed = new URL('../models/toy-shapes/toy_timed.csv', import.meta.url).pathname;
test("the embedded model's toy TIMED file parses and every target names a colour", {
  skip: existsSync(toyTimed) ? false : 'no embedded model yet',
}, () => {
  const entries = parseTimed(readFileSync(toyTimed, 'utf8'), toyTimed);
  assert.ok(entries.length >= 4);
  const img = { width: 2, height: 2, rgb: new Uint8Array(12).fill(200) };
  for (const e of entries)
    for (const t of [e.new, ...e.positives.map((p) => p.gt), ...e.negatives.map((p) => p.gt)])
      assert.equal(typeof colourJudge.success(img, 'generality', e.old, t), 'boolean', t);
});

test('colour judge: a flat purple image succeeds for a purple target and fails for a red one', () => {
  const rgb = new Uint8Array(8 * 8 * 3);
  for (let i = 0; i < 64; i++) rgb.set(i % 8 < 4 ? [140, 55, 200] : [236, 236, 236], i * 3);
  const img = { width: 8, height: 8, rgb };
  assert.equal(colourJudge.success(img, 'efficacy', 'a circle', 'a purple circle'), true);
  assert.equal(colourJudge.success(img, 'efficacy', 'a circle', 'a red circle'), false);
  assert.throws(() => colourJudge.success(img, 'efficacy', 'a circle', 'a circle'), /names no colour/);
});

test('result tables: averages over successful entries, CSV quoting, HTML escaping, errors listed', () => {
  const entry = (i, old) => ({ index: i, old, new: `a purple ${old}`, positives: [], negatives: [] });
  const s = (e, g, sp) => ({ efficacy: e, generality: g, specificity: sp });
  const results = [
    { entry: entry(0, 'circle'), scores: { baseline: s(0, 0, 1), edited: s(1, 0.5, 0.75), oracle: s(1, 1, 1) }, editMs: 3 },
    { entry: entry(1, 'square'), scores: { baseline: s(0, 0, 1), edited: s(0.5, 0.5, 0.25), oracle: s(1, 1, 1) }, editMs: 4 },
    { entry: { ...entry(2, 'x, "y"'), positives: [], negatives: [] }, error: "source word 'x' missing" },
  ];
  const avg = averageScores(results);
  assert.deepEqual(avg.edited, s(0.75, 0.5, 0.5));
  const csv = resultsCsv(results).trim().split('\n');
  assert.equal(csv.length, 4);
  assert.match(csv[3], /^2,"x, ""y""",/);
  assert.match(csv[3], /source word 'x' missing$/);
  const html = resultsHtml(results, { model: '<toy>' });
  assert.match(html, /&lt;toy&gt;/);
  assert.match(html, /<th>edited<\/th><td>75\.0%<\/td><td>50\.0%<\/td><td>50\.0%<\/td>/);
  assert.match(html, /error: source word/);
});

test('the real TIMED files (../shared): the three edit sets parse fully, the gender set is named as such', async (t) => {
  const dir = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', 'shared', 'data', 'TIMED');
  if (!existsSync(dir)) return t.skip('../shared/data/TIMED is not here');
  // Row counts of the published files (header excluded), every entry with 5 positives and 5 negatives.
  for (const [name, rows] of [
    ['TIMED_test_set.csv', 147],
    ['TIMED_test_set_filtered_SD14.csv', 104],
    ['TIMED_validation_set.csv', 8],
  ]) {
    const { entries } = await readTimedDataset(join(dir, name));
    assert.equal(entries.length, rows, name);
    for (const e of entries) {
      assert.ok(e.old && e.new, `${name}: entry ${e.index} has old and new`);
      assert.equal(e.positives.length, 5);
      assert.equal(e.negatives.length, 5);
    }
  }
  await assert.rejects(
    readTimedDataset(join(dir, 'TIMED_gender_test_set.csv')),
    /is the TIMED gender set .*the gender-ratio protocol is `time-edit eval debias FILE`/,
  );
});

// The debiasing protocol: Δ and the λ search against a fake judge whose p(λ) is known, the TIMED gender CSV parsed
// in full, the embedded model's analogue end to end (its counts re-judged here from the PNGs it wrote), the CLIP path
// on the embedded model given as an SD folder with the tiny CLIP fixture, and a run killed after its first entry that,
// resumed, gives the tables of an uninterrupted run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attributeShare, balanceDistance, searchLambda } from '../lib/eval/debias-search.js';
import { parseDebias, readDebiasDataset } from '../lib/eval/debias-csv.js';
import { classifyColour } from '../lib/eval/colour-classifier.js';
import { decodePng } from '../lib/image/png.js';

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'lib/cli.js');
const genderCsv = join(root, '../shared/data/TIMED/TIMED_gender_test_set.csv');

test('Δ = |p − 0.5| / 0.5 and p = attribute / all images (in-between counted against)', () => {
  assert.equal(balanceDistance(0.5), 0);
  assert.equal(balanceDistance(1), 1);
  assert.equal(balanceDistance(0), 1);
  assert.equal(balanceDistance(0.75), 0.5);
  assert.equal(balanceDistance(0.375), 0.25);
  assert.equal(attributeShare({ attribute: 3, other: 4, inBetween: 1 }), 3 / 8);
  assert.throws(() => balanceDistance(1.5), /p must be in \[0, 1\]/);
  assert.throws(() => attributeShare({ attribute: 0, other: 0, inBetween: 0 }), /no image was judged/);
});

test('λ search: finds λ where a known decreasing p(λ) crosses 0.5, stays inside the bounds, takes at most the rounds given', async () => {
  const lambda0 = 3.7;
  const p = (l) => 1 / (1 + (l / lambda0) ** 2); // p(λ0) = 0.5
  let calls = 0;
  const r = await searchLambda(
    async (l) => {
      calls++;
      return p(l);
    },
    { min: 0.01, max: 1e4, rounds: 24 },
  );
  assert.equal(calls, 24);
  assert.equal(r.rounds.length, 24);
  assert.ok(Math.abs(Math.log(r.lambda / lambda0)) < 1e-5, `λ ${r.lambda} vs ${lambda0}`);
  for (const x of r.rounds) assert.ok(x.lambda > 0.01 && x.lambda < 1e4);
  // A judge on 8 seeds sees p in steps of 1/8: the search lands where the quantized p is exactly 0.5 and stops there.
  const quantized = async (l) => Math.round(p(l) * 8) / 8;
  const q = await searchLambda(quantized, { min: 0.01, max: 1e4, rounds: 30 });
  assert.equal(q.p, 0.5);
  assert.ok(q.rounds.length < 30, 'a round that hits 0.5 ends the search');
  assert.equal(q.rounds.at(-1).p, 0.5);
  // The crossing beyond the upper bound: the search walks up to the bound and no further; the best λ is the largest tried.
  const far = await searchLambda(async (l) => 1 / (1 + (l / 1e6) ** 2), { min: 0.01, max: 100, rounds: 6 });
  assert.equal(far.rounds.length, 6);
  assert.ok(far.lambda < 100 && far.lambda === Math.max(...far.rounds.map((x) => x.lambda)));
  await assert.rejects(
    searchLambda(async () => 0.5, { min: 1, max: 1, rounds: 3 }),
    /0 < min < max/,
  );
  await assert.rejects(
    searchLambda(async () => 0.5, { min: 1, max: 2, rounds: 0 }),
    /rounds must be an integer/,
  );
});

test('the TIMED gender CSV parses fully: 35 professions, 20 edited towards female and 15 towards male', async () => {
  const { entries } = await readDebiasDataset(genderCsv);
  assert.equal(entries.length, 35);
  const attrs = entries.map((e) => e.attribute);
  assert.equal(attrs.filter((a) => a === 'female').length, 20);
  assert.equal(attrs.filter((a) => a === 'male').length, 15);
  // Independently of the parser: the file's own lines (no quoted fields in it).
  const lines = readFileSync(genderCsv, 'utf8').trim().split('\n').slice(1);
  entries.forEach((e, i) => {
    const f = lines[i].trim().split(',');
    assert.deepEqual([e.old, e.new, e.validation, ...e.examples], f);
    assert.ok(e.new.endsWith(e.profession) && e.old.endsWith(e.profession));
  });
  assert.equal(entries[0].profession, 'attendant');
  assert.throws(
    () => parseDebias('old,new,validation,ex1,ex2,ex3,ex4,ex5\na cat,a dog,v,1,2,3,4,5\n', 'x.csv'),
    /x.csv: row 2: 'a dog' is not 'a cat' with an attribute word added/,
  );
  assert.throws(() => parseDebias('old,new,validation\n', 'x.csv'), /lacks the debiasing column\(s\) ex1, ex2, ex3, ex4, ex5/);
});

const toyArgs = ['--seeds', '2', '--search-seeds', '10,11', '--rounds', '2', '--steps', '8', '--end', '2'];

function runCli(args) {
  return spawnSync(process.execPath, [cli, 'eval', 'debias', ...args], { encoding: 'utf8' });
}

test('the toy analogue end to end: two shapes, counts equal the colour classifier on the written images, tables written', async () => {
  const out = mkdtempSync(join(tmpdir(), 'debias-toy-'));
  try {
    const r = runCli([...toyArgs, '--out', out, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.entries.length, 2);
    const log = readFileSync(join(out, 'results.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(log.length, 3);
    for (const line of log.slice(1)) {
      const e = line.entry;
      const shape = e.profession;
      const dflt = { circle: 'red', square: 'blue' }[shape];
      for (const model of ['baseline', 'fixed', 'searched']) {
        const dir = join(out, 'images', `e${e.index}-a-${shape}`, model);
        const files = readdirSync(dir).sort();
        assert.equal(files.length, 12, '6 prompts × 2 seeds');
        line.counts[model].forEach((c, i) => {
          const mine = { attribute: 0, other: 0, inBetween: 0 };
          for (const f of files.filter((n) => n.startsWith(String(i).padStart(2, '0')))) {
            const img = decodePng(readFileSync(join(dir, f)));
            const colour = classifyColour(img.rgb, img.width, img.height);
            if (colour === 'purple') mine.attribute++;
            else if (colour === dflt) mine.other++;
            else mine.inBetween++;
          }
          assert.deepEqual(c, mine, `${shape} ${model} prompt ${i}`);
        });
      }
      assert.equal(line.search.rounds.length, 2);
      assert.ok(line.search.lambda > 0.01 && line.search.lambda < 1e4);
    }
    for (const f of ['results.csv', 'report.html', 'summary.json']) assert.ok(existsSync(join(out, f)), f);
    assert.equal(readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n').length, 3);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a run killed after its first entry, resumed, gives the tables of an uninterrupted run', async () => {
  const whole = mkdtempSync(join(tmpdir(), 'debias-whole-'));
  const cut = mkdtempSync(join(tmpdir(), 'debias-cut-'));
  try {
    assert.equal(runCli([...toyArgs, '--out', whole]).status, 0);
    const child = spawn(process.execPath, [cli, 'eval', 'debias', ...toyArgs, '--out', cut], { stdio: 'ignore' });
    const log = join(cut, 'results.jsonl');
    await new Promise((resolve, reject) => {
      const poll = setInterval(() => {
        const lines = existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0;
        if (lines >= 2) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 50);
      child.on('exit', () => {
        clearInterval(poll);
        resolve();
      });
      child.on('error', reject);
    });
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.on('exit', r)));
    const resumed = runCli([...toyArgs, '--out', cut]);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming from .*1 entries already done, 1 to compute|resuming from .*2 entries already done/);
    assert.equal(readFileSync(join(cut, 'results.csv'), 'utf8'), readFileSync(join(whole, 'results.csv'), 'utf8'));
    const strip = (s) => JSON.stringify({ ...JSON.parse(s), seconds: 0 });
    assert.equal(strip(readFileSync(join(cut, 'summary.json'), 'utf8')), strip(readFileSync(join(whole, 'summary.json'), 'utf8')));
    // Other settings are refused, naming the flag.
    const other = runCli([...toyArgs.map((a) => (a === '10,11' ? '20,21' : a)), '--out', cut]);
    assert.equal(other.status, 2);
    assert.match(other.stderr, /--search-seeds was 10,11 there and is 20,21 now/);
  } finally {
    rmSync(whole, { recursive: true, force: true });
    rmSync(cut, { recursive: true, force: true });
  }
});

test('the CLIP path: the gender CSV on the embedded model given as an SD folder, judged by the tiny CLIP fixture', async () => {
  const out = mkdtempSync(join(tmpdir(), 'debias-clip-'));
  try {
    const r = runCli([
      genderCsv,
      '--model',
      join(root, 'models/toy-shapes'),
      '--clip',
      join(root, 'test/fixtures/tiny-clip'),
      '--clip-tokenizer',
      join(root, 'models/toy-shapes/tokenizer'),
      '--end',
      '1',
      '--seeds',
      '1',
      '--search-seeds',
      '5',
      '--rounds',
      '1',
      '--steps',
      '2',
      '--out',
      out,
      '--json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.match(s.judge, /CLIP zero-shot: "a photo of a \{attribute\} \{profession\}" with female \/ male/);
    assert.equal(s.entries[0].old, 'an attendant');
    const noClip = runCli([genderCsv, '--out', out, '--restart']);
    assert.equal(noClip.status, 2);
    assert.match(
      noClip.stderr,
      /the toy judge needs a shape in old and a colour in new: "an attendant" → "a female attendant" \(an SD dataset needs --clip\)/,
    );
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

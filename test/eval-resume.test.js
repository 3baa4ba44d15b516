// eval timed is resumable: entries are recorded in OUT/results.jsonl as they finish; a rerun with the same --out
// skips them, tolerates a last line cut short by a kill, refuses other settings by name, and --restart starts over.
// The final tables equal those of an uninterrupted run. Runs the CLI on the embedded model with 1 seed, 2 steps.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRunLog, settingsDifferences, startRunLog, appendToRunLog, readRunLog } from '../lib/eval/timed-log.js';
import { UneditedImages } from '../lib/eval/unedited-images.js';
import { writePng } from '../lib/image/png.js';

const cli = new URL('../lib/cli.js', import.meta.url).pathname;
const toyTimed = new URL('../models/toy-shapes/toy_timed.csv', import.meta.url).pathname;
const modelPresent = existsSync(new URL('../models/toy-shapes/unet/model.onnx', import.meta.url).pathname) && existsSync(toyTimed);
const cheap = ['--seeds', '1', '--steps', '2'];

function run(args) {
  const r = spawnSync(process.execPath, [cli, 'eval', 'timed', ...cheap, ...args], { encoding: 'utf8', timeout: 180000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Entry indices whose computation the run announced ("entry N (k/n): …"). */
const computed = (stderr) => [...stderr.matchAll(/time-edit: entry (\d+) \(\d+\/\d+\)/g)].map((m) => Number(m[1]));

/** summary.json without the timing, results.csv without the edit_ms column, report.html as is. */
function tables(out) {
  const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
  delete summary.seconds;
  const csv = readFileSync(join(out, 'results.csv'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(','));
  const t = csv[0].indexOf('edit_ms');
  assert.ok(t > 0);
  return { summary, csv: csv.map((row) => row.filter((_, i) => i !== t)), html: readFileSync(join(out, 'report.html'), 'utf8') };
}

function mtimes(dir) {
  const out = {};
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true }))
    if (e.isFile()) out[join(e.parentPath ?? e.path, e.name)] = statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs;
  return out;
}

const logLines = (out) => readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n');

let dir;
let freshOut;
/** The folder of an uninterrupted run over all entries, made once: what every resumed run must reproduce. */
function fresh() {
  if (freshOut === undefined) {
    const out = join(dir, 'fresh');
    const r = run(['--out', out]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(computed(r.err), [0, 1, 2, 3]);
    freshOut = out;
  }
  return freshOut;
}
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'eval-resume-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const needsModel = { skip: modelPresent ? false : 'no embedded model' };

test('an uninterrupted run records every entry after a header of its settings', needsModel, () => {
  const lines = logLines(fresh()).map((l) => JSON.parse(l));
  assert.equal(lines[0].log, 'time-edit eval timed');
  assert.deepEqual(lines[0].settings.seeds, [0]);
  assert.equal(lines[0].settings.steps, 2);
  assert.deepEqual(
    lines.slice(1).map((l) => l.entry.index),
    [0, 1, 2, 3],
  );
});

test(
  'a run over entries 0..1, a torn last line, then a rerun over all: only 2 and 3 are computed; tables equal the uninterrupted run',
  needsModel,
  () => {
    const out = join(dir, 'resumed');
    const first = run(['--end', '2', '--out', out]);
    assert.equal(first.code, 0, first.err);
    assert.deepEqual(computed(first.err), [0, 1]);
    const before = mtimes(join(out, 'images'));
    // What a kill in the middle of an append leaves behind.
    appendFileSync(join(out, 'results.jsonl'), '{"entry":{"index":2,"old":"a tri');
    const second = run(['--out', out]);
    assert.equal(second.code, 0, second.err);
    assert.match(second.err, /results\.jsonl line 4 was cut short \(an interrupted run\): ignored/);
    assert.match(second.err, /entries 0\.\.1 already done \(skipped\); computing 2\.\.3/);
    assert.deepEqual(computed(second.err), [2, 3]);
    const after = mtimes(join(out, 'images'));
    for (const [f, t] of Object.entries(before)) assert.equal(after[f], t, `${f} was written again`);
    assert.deepEqual(
      logLines(out)
        .slice(1)
        .map((l) => JSON.parse(l).entry.index),
      [0, 1, 2, 3],
      'the torn line is gone, nothing duplicated',
    );
    assert.deepEqual(tables(out), tables(fresh()));
    assert.equal(JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')).entries, '0..3');

    // Once everything is done, a rerun computes nothing and writes the same tables.
    const third = run(['--out', out]);
    assert.equal(third.code, 0, third.err);
    assert.deepEqual(computed(third.err), []);
    assert.match(third.err, /nothing left to compute/);
    assert.deepEqual(tables(out), tables(fresh()));
  },
);

test('a run killed (SIGKILL) in the middle resumes with the same command to the same tables', needsModel, async () => {
  const out = join(dir, 'killed');
  const child = spawn(process.execPath, [cli, 'eval', 'timed', ...cheap, '--out', out], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const log = join(out, 'results.jsonl');
  const deadline = Date.now() + 120000;
  while (!(existsSync(log) && logLines(out).length >= 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGKILL');
  await exited;
  assert.equal(existsSync(join(out, 'summary.json')), false, 'the run finished before the kill: nothing left to resume');
  const done = logLines(out).length - 1;
  const r = run(['--out', out]);
  assert.equal(r.code, 0, r.err);
  assert.ok(done >= 1 && done < 4, `${done} entries recorded before the kill`);
  assert.deepEqual(computed(r.err), [0, 1, 2, 3].slice(done), 'exactly the entries not recorded are computed');
  assert.deepEqual(tables(out), tables(fresh()));
});

// The next three tests work on the folder the resumed run above left (node:test runs a file's tests in order).

test('other settings on the same --out are refused by name, before any model work; nothing is changed', needsModel, () => {
  const out = join(dir, 'resumed');
  const logBefore = readFileSync(join(out, 'results.jsonl'), 'utf8');
  const changed = join(dir, 'changed.csv');
  copyFileSync(toyTimed, changed);
  appendFileSync(changed, '\n');
  const cases = [
    [['--lambda', '1'], /--lambda was 0\.1 there and is 1 now/],
    [['--seeds', '2'], /--seeds was 0 there and is 0,1 now/],
    [['--no-augment'], /--no-augment was A photo of ,An image of ,A picture of {2}there and is \(none\) now/],
    [['--only-v', '--mode', 'weights'], /--only-v was false there and is true now; --mode was embedding there and is weights now/],
    [['--dataset', changed], /--dataset \(the file's contents, sha256\) was [0-9a-f]{64} there and is [0-9a-f]{64} now/],
  ];
  for (const [args, re] of cases) {
    const t0 = Date.now();
    const r = run(['--out', out, ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}: ${r.err}`);
    assert.match(r.err, re);
    assert.match(r.err, /Pick another --out, or pass --restart/);
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.ok(Date.now() - t0 < 5000, 'refused before loading the model');
  }
  assert.equal(readFileSync(join(out, 'results.jsonl'), 'utf8'), logBefore);
  // --steps is given twice: the last one counts, as with every flag.
  assert.match(run(['--out', out, '--steps', '3']).err, /--steps was 2 there and is 3 now/);
});

test('a damaged line other than the last is an error naming the file and line', needsModel, () => {
  const out = join(dir, 'resumed');
  const lines = logLines(out);
  lines[2] = lines[2].replace('"scores"', '"sc0res"');
  writeFileSync(join(out, 'results.jsonl'), `${lines.join('\n')}\n`);
  const r = run(['--out', out]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /results\.jsonl line 3 is damaged \("scores" must give/);
  lines[2] = 'not json at all';
  writeFileSync(join(out, 'results.jsonl'), `${lines.join('\n')}\n`);
  assert.match(run(['--out', out]).err, /results\.jsonl line 3 is damaged \(Unexpected token/);
});

test('--restart discards the earlier results (even a damaged log) and starts over with the new settings', needsModel, () => {
  const out = join(dir, 'resumed');
  const r = run(['--out', out, '--restart', '--lambda', '1', '--end', '1']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(computed(r.err), [0]);
  const lines = logLines(out).map((l) => JSON.parse(l));
  assert.equal(lines[0].settings.lambda, 1);
  assert.deepEqual(
    lines.slice(1).map((l) => l.entry.index),
    [0],
  );
  assert.deepEqual(readdirSync(join(out, 'images')), ['e0-a-circle']);
  assert.equal(JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')).entries, '0');
});

test(
  'a results.jsonl that is not an eval timed log (edit --batch writes one too) is refused, and --restart does not delete it',
  needsModel,
  () => {
    const out = join(dir, 'batch-out');
    mkdirSync(out);
    const batchRow = '{"line":1,"key":"0123456789abcdef","status":"ok","file":"edits/line-00001.safetensors"}\n';
    writeFileSync(join(out, 'results.jsonl'), batchRow);
    // Without --restart the log cannot be read (exit 1); with it, the flag cannot apply to this folder (exit 2).
    for (const [extra, code] of [
      [[], 1],
      [['--restart'], 2],
    ]) {
      const r = run(['--out', out, ...extra]);
      assert.equal(r.code, code, r.err);
      assert.match(r.err, /results\.jsonl .*(is not the header of a 'time-edit eval timed' log|is not one).*pick another --out/);
      assert.doesNotMatch(r.err, /pass --restart/);
    }
    assert.equal(readFileSync(join(out, 'results.jsonl'), 'utf8'), batchRow);
  },
);

test('an entry that failed is recorded and computed again by a rerun (the failure may have been transient)', needsModel, () => {
  const rows = readFileSync(toyTimed, 'utf8').trim().split('\n');
  const bad = join(dir, 'bad.csv');
  writeFileSync(bad, `${rows[0]}\n${rows[1].replace('a purple circle,', 'a purple dog,')}\n`);
  const out = join(dir, 'failing');
  const first = run(['--dataset', bad, '--out', out]);
  assert.equal(first.code, 0, first.err);
  assert.match(first.out, /entry 0 failed: cannot align "a circle" with "a purple dog"/);
  const second = run(['--dataset', bad, '--out', out]);
  assert.equal(second.code, 0, second.err);
  assert.match(second.err, /no entry of this range done yet; entry 0 failed before and is computed again; computing 0/);
  assert.deepEqual(computed(second.err), [0]);
  assert.equal(JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')).errors.length, 1);
});

// The log and the image store on their own, without a model.

test('unedited images: remembered PNGs are read back instead of sampled; a missing one is sampled again, with a warning', async () => {
  const d = mkdtempSync(join(tmpdir(), 'unedited-'));
  try {
    const img = (v) => ({ width: 2, height: 2, rgb: new Uint8Array(12).fill(v) });
    const sampled = [];
    const warnings = [];
    const store = new UneditedImages(
      [7, 9],
      { width: 2, height: 2 },
      async (prompts) => {
        sampled.push(prompts);
        return prompts.flatMap((p, i) => [7, 9].map((seed) => ({ ...img(100 + i), prompt: p, promptIndex: i, seed })));
      },
      (m) => warnings.push(m),
    );
    const paths = [join(d, 'a7.png'), join(d, 'a9.png')];
    await writePng(paths[0], img(1));
    await writePng(paths[1], img(2));
    store.remember('a', paths);
    const got = await store.get(['b', 'a', 'b']);
    assert.deepEqual(sampled, [['b']], 'a is read back, b is sampled once');
    assert.deepEqual(
      got[1].map((g) => [g.rgb[0], g.seed, g.prompt]),
      [
        [1, 7, 'a'],
        [2, 9, 'a'],
      ],
    );
    assert.deepEqual(
      got[0].map((g) => g.rgb[0]),
      [100, 100],
    );
    assert.deepEqual(
      got[2].map((g) => g.rgb),
      got[0].map((g) => g.rgb),
      'a prompt asked twice gets the same images',
    );
    rmSync(paths[1]);
    const again = await store.get(['a']);
    assert.deepEqual(sampled, [['b'], ['a']]);
    assert.equal(again[0][0].rgb[0], 100);
    assert.match(warnings[0], /cannot reuse the unedited images of "a" \(ENOENT/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

const entry = (index) => ({
  index,
  old: `a thing${index}`,
  new: `a purple thing${index}`,
  positives: Array.from({ length: 5 }, (_, k) => ({ test: `p${k}`, gt: `g${k}` })),
  negatives: Array.from({ length: 5 }, (_, k) => ({ test: `n${k}`, gt: `m${k}` })),
});
const s = { efficacy: 1, generality: 0.5, specificity: 0.25 };
const settings = {
  model: '/m',
  modelFingerprint: 'fp',
  datasetSha256: 'ab',
  seeds: [0, 1],
  steps: 2,
  guidance: 7.5,
  lambda: 0.1,
  augmentations: [],
  onlyV: false,
  mode: 'embedding',
  keepUncond: false,
  judge: 'toy colour classifier',
  device: 'cpu',
  batchSize: 16,
};

test('run log: written, appended, read back; a retried entry keeps its latest record; torn last line dropped', () => {
  const d = mkdtempSync(join(tmpdir(), 'timed-log-'));
  try {
    const path = join(d, 'results.jsonl');
    startRunLog(path, settings, [
      { entry: entry(3), error: 'boom' },
      { entry: entry(1), scores: { baseline: s, edited: s, oracle: s }, editMs: 1.25, seconds: 2 },
    ]);
    appendToRunLog(path, { entry: entry(3), scores: { baseline: s, edited: s, oracle: s }, editMs: 3, seconds: 4 });
    const { log, tornLine } = readRunLog(path);
    assert.equal(tornLine, undefined);
    assert.deepEqual(log.settings, settings);
    assert.deepEqual([...log.results.keys()].sort(), [1, 3]);
    assert.equal(log.results.get(3).error, undefined);
    assert.deepEqual(log.results.get(1), { entry: entry(1), scores: { baseline: s, edited: s, oracle: s }, editMs: 1.25, seconds: 2 });
    const text = readFileSync(path, 'utf8');
    const torn = parseRunLog(`${text}{"entry":{"ind`, path);
    assert.equal(torn.tornLine, 5);
    assert.equal(torn.log.results.size, 2);
    assert.deepEqual(parseRunLog('{"log":"time-edit eval t', path), { tornLine: 1 }, 'a torn header is no log yet');
    assert.deepEqual(parseRunLog('', path), { tornLine: undefined });
    assert.equal(readRunLog(join(d, 'none.jsonl')).log, undefined);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('run log: damage is reported by file and line; foreign files and other formats are refused', () => {
  const header = JSON.stringify({ log: 'time-edit eval timed', format: 1, settings });
  const good = JSON.stringify({ entry: entry(0), scores: { baseline: s, edited: s, oracle: s } });
  assert.throws(
    () => parseRunLog(`${header}\n{"entry":1}\n${good}\n`, 'x.jsonl'),
    /x\.jsonl line 2 is damaged \("entry" is not a TIMED entry/,
  );
  assert.throws(
    () => parseRunLog(`${header}\n\n${good.replace('0.25', '2')}\n${good}\n`, 'x.jsonl'),
    /x\.jsonl line 3 is damaged \("scores" must give/,
  );
  assert.throws(() => parseRunLog(`${header}\n{oops\n${good}\n`, 'x.jsonl'), /x\.jsonl line 2 is damaged/);
  assert.throws(
    () => parseRunLog(`{"line":1,"key":"abc","status":"ok"}\n`, 'x.jsonl'),
    /x\.jsonl line 1 is not the header of a 'time-edit eval timed' log/,
  );
  assert.throws(() => parseRunLog(`${header.replace('"format":1', '"format":9')}\n`, 'x.jsonl'), /format 9; this time-edit reads format 1/);
});

test('run settings: every difference is named by its flag; only the given keys are compared', () => {
  assert.deepEqual(settingsDifferences(settings, { ...settings }), []);
  assert.deepEqual(settingsDifferences(settings, { lambda: 1, seeds: [0, 1, 2], keepUncond: true }), [
    '--lambda was 0.1 there and is 1 now',
    '--seeds was 0,1 there and is 0,1,2 now',
    '--keep-uncond was false there and is true now',
  ]);
  assert.deepEqual(settingsDifferences({ ...settings, modelFingerprint: undefined }, { modelFingerprint: 'fp' }), [
    '--model (the model files changed: text encoder or UNet) was (not recorded) there and is fp now',
  ]);
  assert.deepEqual(settingsDifferences(settings, { judge: 'CLIP /c' }), ['--clip was toy colour classifier there and is CLIP /c now']);
});

test('run log bytes: the header line, then one compact JSON line per entry in index order (the format reruns read)', () => {
  const d = mkdtempSync(join(tmpdir(), 'timed-log-'));
  try {
    const path = join(d, 'results.jsonl');
    const scores = { baseline: s, edited: s, oracle: s };
    startRunLog(path, settings, [
      { entry: entry(2), error: 'boom', seconds: 1 },
      { entry: entry(0), scores, editMs: 1.5, seconds: 2 },
    ]);
    appendToRunLog(path, { entry: entry(5), scores, editMs: 3, seconds: 4 });
    const e = (i) => JSON.stringify(entry(i));
    const sc =
      '{"baseline":{"efficacy":1,"generality":0.5,"specificity":0.25},"edited":{"efficacy":1,"generality":0.5,"specificity":0.25},"oracle":{"efficacy":1,"generality":0.5,"specificity":0.25}}';
    assert.equal(
      readFileSync(path, 'utf8'),
      [
        '{"log":"time-edit eval timed","format":1,"settings":{"model":"/m","modelFingerprint":"fp","datasetSha256":"ab","seeds":[0,1],"steps":2,"guidance":7.5,"lambda":0.1,"augmentations":[],"onlyV":false,"mode":"embedding","keepUncond":false,"judge":"toy colour classifier","device":"cpu","batchSize":16}}',
        `{"entry":${e(0)},"scores":${sc},"editMs":1.5,"seconds":2}`,
        `{"entry":${e(2)},"error":"boom","seconds":1}`,
        `{"entry":${e(5)},"scores":${sc},"editMs":3,"seconds":4}`,
        '',
      ].join('\n'),
    );
    assert.deepEqual(readdirSync(d), ['results.jsonl'], 'no temporary file left');
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

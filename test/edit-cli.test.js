// The edit, eval and generate --edit commands on bad input: one clear line, nothing written; exit code 2 for a bad
// command line, 1 for a file that cannot be used (a TIMED CSV, an edit file for another model; docs/errors.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadEdit, saveEdit } from '../lib/edit/edit-file.js';

const cli = new URL('../lib/cli.js', import.meta.url).pathname;
const modelPresent = existsSync(new URL('../models/toy-shapes/model_index.json', import.meta.url).pathname);

function run(args) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120000 });
  return { code: r.status, err: r.stderr.trim(), out: r.stdout };
}

test('edit: bad flags are refused before any model work, and nothing is written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-cli-'));
  try {
    const out = join(dir, 'out');
    const cases = [
      [['--source', 'a circle', '--out', out], /--source and --dest are required/],
      [['--source', '', '--dest', 'a circle', '--out', out], /must not be empty/],
      [['--source', 'a circle', '--dest', 'a purple circle', '--lambda', '0', '--out', out], /--lambda must be > 0/],
      [['--source', 'a circle', '--dest', 'a purple circle', '--lambda=-2', '--out', out], /--lambda must be > 0/],
      [['--source', 'a circle', '--dest', 'a purple circle', '--mode', 'magic', '--out', out], /--mode must be embedding or weights/],
      [['--source', 'a circle', '--dest', 'a purple circle', '--seeds', 'x', '--out', out], /seeds/],
      [['--source', 'a circle', '--dest', 'a purple circle', '--pair', 'nonsense', '--out', out], /--pair must look like/],
      [
        ['--source', 'a circle', '--dest', 'a purple circle', '--no-augment', '--augmentations', 'A photo of ', '--out', out],
        /--no-augment and --augmentations contradict/,
      ],
    ];
    for (const [args, re] of cases) {
      const r = run(['edit', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.err}`);
      assert.match(r.err.split('\n')[0], re);
      assert.equal(existsSync(out), false, `${args.join(' ')} wrote ${out}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit --batch: flags without meaning in a batch are refused by name, exit 2, nothing written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-cli-'));
  try {
    const out = join(dir, 'out');
    const file = join(dir, 'e.jsonl');
    writeFileSync(file, '{"source":"a circle","destination":"a purple circle"}\n');
    const cases = [
      [['--prompt', 'a square'], /^time-edit: --prompt cannot be combined with --batch \(a batch draws no before\/after grid\)$/],
      [['--seeds', '0-3', '--steps', '5'], /^time-edit: --seeds, --steps cannot be combined with --batch/],
      [
        ['--source', 'a circle', '--dest', 'a red circle'],
        /^time-edit: --source, --dest cannot be combined with --batch \(each line of the batch file gives its own source and destination\)$/,
      ],
      [
        ['--pair', 'a=>b a', '--on', join(dir, 'x.safetensors'), '--mode', 'weights', '--guidance', '3'],
        /--pair, --on, --mode, --guidance cannot be combined with --batch \(.*source and destination; a batch does not compose onto an existing edit; a batch draws no before\/after grid\)$/,
      ],
      [
        ['--export', join(dir, 'exp'), '--force'],
        /--export, --force cannot be combined with --batch \(a batch exports no edited pipeline\)$/,
      ],
      [['--lambda', '0'], /--lambda must be > 0/],
    ];
    for (const [args, re] of cases) {
      const r = run(['edit', '--batch', file, ...args, '--out', out]);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.err}`);
      assert.equal(r.err.split('\n').length, 1, r.err);
      assert.match(r.err, re);
      assert.equal(existsSync(out), false, `${args.join(' ')} wrote ${out}`);
      assert.equal(existsSync(join(dir, 'exp')), false);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit --batch on the embedded model: --lambda/--only-v/--no-augment are line defaults; a rerun with another --lambda recomputes those lines', {
  skip: modelPresent ? false : 'no embedded model',
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-cli-'));
  try {
    const file = join(dir, 'e.jsonl');
    writeFileSync(
      file,
      `${['{"source":"a circle","destination":"a purple circle"}', '{"source":"a circle","destination":"a purple circle","lambda":0.2,"onlyV":false}'].join('\n')}\n`,
    );
    const out = join(dir, 'nested', 'out');
    const r1 = run(['edit', '--batch', file, '--lambda', '1', '--only-v', '--no-augment', '--no-grid', '--json', '--out', out]);
    assert.equal(r1.code, 0, r1.err);
    const s1 = JSON.parse(r1.out);
    assert.deepEqual([s1.total, s1.ok, s1.errors, s1.skipped], [2, 2, 0, 0]);
    const step = async (line) => (await loadEdit(join(out, 'edits', `line-0000${line}.safetensors`))).steps[0];
    const [a, b] = [await step(1), await step(2)];
    assert.deepEqual([a.lambda, a.mode, a.augmentations], [1, 'v', []], 'the line without λ/onlyV/augmentations takes the flags');
    assert.deepEqual([b.lambda, b.mode, b.augmentations], [0.2, 'kv', []], "a line's own λ and onlyV win");
    const rows = () =>
      readFileSync(join(out, 'results.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
    assert.deepEqual(
      rows().map((x) => [x.line, x.lambda, x.onlyV]),
      [
        [1, 1, true],
        [2, 0.2, false],
      ],
    );

    const r2 = run(['edit', '--batch', file, '--lambda', '3', '--only-v', '--no-augment', '--out', out]);
    assert.equal(r2.code, 0, r2.err);
    assert.match(
      r2.err,
      /1 edits written, 0 errors \(1 recomputed because their λ, only-v, augmentations, preserve or the model changed\), 1 lines already done \(of 2\)/,
    );
    assert.deepEqual(
      rows().map((x) => [x.line, x.lambda]),
      [
        [1, 3],
        [2, 0.2],
      ],
    );
    assert.equal((await step(1)).lambda, 3);

    // A line that fails (λ ≤ 0) is reported in its row; the exit code says so (1).
    writeFileSync(file, `${readFileSync(file, 'utf8')}{"source":"a circle","destination":"a purple circle","lambda":-1}\n`);
    const r3 = run(['edit', '--batch', file, '--lambda', '3', '--only-v', '--no-augment', '--out', out]);
    assert.equal(r3.code, 1, r3.err);
    assert.match(r3.err, /0 edits written, 1 errors, 2 lines already done \(of 3\)/);
    assert.equal(rows().find((x) => x.line === 3).status, 'error');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('eval timed: a CSV without the TIMED columns is refused by name', () => {
  const dir = mkdtempSync(join(tmpdir(), 'eval-cli-'));
  try {
    const csv = join(dir, 'bad.csv');
    writeFileSync(csv, 'old,new,positive1\na circle,a purple circle,a big circle\n');
    const r = run(['eval', 'timed', '--dataset', csv, '--out', join(dir, 'o')]);
    assert.equal(r.code, 1);
    assert.match(r.err, /lacks the TIMED column\(s\) gt1, negative1, gn1/);
    assert.equal(existsSync(join(dir, 'o')), false);
    assert.equal(run(['eval', 'nope']).code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit on the embedded model: a source word missing from the destination is named; nothing written', {
  skip: modelPresent ? false : 'no embedded model',
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-cli-'));
  try {
    const r = run(['edit', '--source', 'a dog', '--dest', 'a purple circle', '--out', join(dir, 'o')]);
    assert.equal(r.code, 2);
    assert.match(r.err, /source word 'dog' does not appear in the destination/);
    assert.equal(existsSync(join(dir, 'o')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('generate --edit: an edit file for another model is refused; nothing written', {
  skip: modelPresent ? false : 'no embedded model',
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'gen-cli-'));
  try {
    const file = join(dir, 'foreign.safetensors');
    saveEdit(file, {
      d: 128,
      fingerprint: 'f'.repeat(64),
      steps: [
        {
          pairs: [],
          preserve: [],
          lambda: 0.1,
          augmentations: [],
          mode: 'kv',
          rows: 1,
          D: new Float32Array(128),
          G: new Float32Array(128),
        },
      ],
    });
    const out = join(dir, 'o');
    const r = run(['generate', 'a circle', '--edit', file, '--steps', '2', '--out', out]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /made for a different model/);
    assert.equal(existsSync(out), false);
    const r2 = run(['generate', 'a circle', '--edit-mode', 'weights', '--out', out]);
    assert.equal(r2.code, 2);
    assert.match(r2.err, /--edit-mode needs --edit FILE/);
    mkdirSync(join(dir, 'exists'));
    const r3 = run(['edit', '--source', 'a circle', '--dest', 'a purple circle', '--export', join(dir, 'exists'), '--out', out]);
    assert.equal(r3.code, 2);
    assert.match(r3.err, /already exists/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

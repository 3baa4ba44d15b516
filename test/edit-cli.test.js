// The edit, eval and generate --edit commands on bad input: one clear line, exit code 2, nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveEdit } from '../lib/edit/edit-file.js';

const cli = new URL('../lib/cli.js', import.meta.url).pathname;
const modelPresent = existsSync(new URL('../models/toy-shapes/model_index.json', import.meta.url).pathname);

function run(args) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120000 });
  return { code: r.status, err: r.stderr.trim() };
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

test('eval timed: a CSV without the TIMED columns is refused by name', () => {
  const dir = mkdtempSync(join(tmpdir(), 'eval-cli-'));
  try {
    const csv = join(dir, 'bad.csv');
    writeFileSync(csv, 'old,new,positive1\na circle,a purple circle,a big circle\n');
    const r = run(['eval', 'timed', '--dataset', csv, '--out', join(dir, 'o')]);
    assert.equal(r.code, 2);
    assert.match(r.err, /lacks the TIMED column\(s\) gt1, negative1, gn1/);
    assert.equal(existsSync(join(dir, 'o')), false);
    assert.equal(run(['eval', 'nope']).code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit on the embedded model: a source word missing from the destination is named; nothing written', { skip: modelPresent ? false : 'no embedded model' }, () => {
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

test('generate --edit: an edit file for another model is refused; nothing written', { skip: modelPresent ? false : 'no embedded model' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'gen-cli-'));
  try {
    const file = join(dir, 'foreign.safetensors');
    saveEdit(file, { d: 128, fingerprint: 'f'.repeat(64), steps: [{ pairs: [], preserve: [], lambda: 0.1, augmentations: [], mode: 'kv', rows: 1, D: new Float32Array(128), G: new Float32Array(128) }] });
    const out = join(dir, 'o');
    const r = run(['generate', 'a circle', '--edit', file, '--steps', '2', '--out', out]);
    assert.equal(r.code, 2, r.err);
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

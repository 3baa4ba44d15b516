// The ablation table's inputs and outputs: the preservation list shares no prompt with the toy TIMED file (no test
// prompt, no target), the table is collected from eval timed folders as written, and the ablation flags of `edit` and
// `eval timed` reach the edit (mode and layers in the edit file, the run settings) or are refused with one clear line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ABLATION_SETTINGS, PRESERVATION_PROMPTS, collectTable } from '../scripts/ablation-table.mjs';
import { loadEdit } from '../lib/edit/edit-file.js';

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'lib/cli.js');

test('the preservation list contains no prompt of the toy TIMED file, test prompt or target', () => {
  const lines = readFileSync(join(root, 'models/toy-shapes/toy_timed.csv'), 'utf8').trim().split('\n');
  const everyPrompt = new Set(lines.slice(1).flatMap((l) => l.split(',').map((f) => f.trim())));
  assert.equal(everyPrompt.size > 40, true);
  for (const p of PRESERVATION_PROMPTS) assert.equal(everyPrompt.has(p), false, `"${p}" is in toy_timed.csv`);
  assert.deepEqual(
    ABLATION_SETTINGS.map((s) => s.name),
    ['time', 'konly', 'vonly', 'noaug', 'down', 'mid', 'up', 'preserve'],
  );
});

test('collectTable: baseline and oracle from the first run, one row per finished setting, per-entry columns', () => {
  const out = mkdtempSync(join(tmpdir(), 'ablation-collect-'));
  try {
    const write = (name, edited) => {
      mkdirSync(join(out, name));
      const s = { efficacy: 0, generality: 0, specificity: 1 };
      const o = { efficacy: 1, generality: 1, specificity: 1 };
      writeFileSync(join(out, name, 'summary.json'), JSON.stringify({ summary: { baseline: s, edited, oracle: o } }));
      writeFileSync(
        join(out, name, 'results.csv'),
        `index,old,new,b_e,b_g,b_s,e_e,e_g,e_s,o_e,o_g,o_s,edit_ms,error\n0,a circle,a purple circle,0,0,1,${edited.efficacy},${edited.generality},${edited.specificity},1,1,1,5,\n`,
      );
    };
    write('time', { efficacy: 1, generality: 0.5, specificity: 0.25 });
    write('mid', { efficacy: 0.75, generality: 0.5, specificity: 1 });
    const rows = collectTable(out);
    assert.deepEqual(
      rows.map((r) => r.name),
      ['baseline', 'time', 'mid', 'oracle'],
    );
    assert.deepEqual(rows[2].perEntry, [[0.75, 0.5, 1]]);
    assert.deepEqual(rows[0].perEntry, [[0, 0, 1]]);
    assert.equal(rows[3].scores.efficacy, 1);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

const run = (...args) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('edit --only-k --layers mid,13-15 writes mode k and layers [6, 13, 14, 15]; contradictions and unknown layers are usage errors', async () => {
  const out = mkdtempSync(join(tmpdir(), 'ablation-edit-'));
  try {
    const r = run(
      'edit',
      '--source',
      'a circle',
      '--dest',
      'a purple circle',
      '--only-k',
      '--layers',
      'mid,13-15',
      '--no-grid',
      '--out',
      out,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /edited the K projections of 4 of the 16 cross-attention layers/);
    const edit = await loadEdit(join(out, 'edit.safetensors'));
    assert.equal(edit.steps[0].mode, 'k');
    assert.deepEqual(edit.steps[0].layers, [6, 13, 14, 15]);
    const both = run('edit', '--source', 'a circle', '--dest', 'a purple circle', '--only-k', '--only-v', '--out', out);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--only-v and --only-k contradict each other/);
    const bad = run('edit', '--source', 'a circle', '--dest', 'a purple circle', '--layers', '3,16', '--no-grid', '--out', out);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--layers: cross-attention layer 16 does not exist: this UNet has layers 0-15/);
    const batch = run('edit', '--batch', join(out, 'none.jsonl'), '--only-k', '--out', out);
    assert.equal(batch.status, 2);
    assert.match(batch.stderr, /--only-k cannot be combined with --batch/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('eval timed records --only-k, --layers and --preserve in its settings and refuses a resume that drops them', () => {
  const out = mkdtempSync(join(tmpdir(), 'ablation-timed-'));
  try {
    const args = ['eval', 'timed', '--seeds', '1', '--steps', '2', '--end', '1', '--out', out];
    const r = run(...args, '--only-k', '--layers', 'up', '--preserve', 'a green star');
    assert.equal(r.status, 0, r.stderr);
    const settings = JSON.parse(readFileSync(join(out, 'results.jsonl'), 'utf8').split('\n')[0]).settings;
    assert.equal(settings.onlyK, true);
    assert.deepEqual(settings.layers, [7, 8, 9, 10, 11, 12, 13, 14, 15]);
    assert.deepEqual(settings.preserve, ['a green star']);
    const again = run(...args);
    assert.equal(again.status, 2);
    assert.match(again.stderr, /--only-k was true there and is \(not recorded\) now/);
    assert.match(again.stderr, /--layers was 7,8,9,10,11,12,13,14,15 there and is \(not recorded\) now/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

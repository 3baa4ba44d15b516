// edit --batch: one edit file and one result row per line, bad lines reported without stopping the others,
// reruns skip finished lines, a torn last row is redone, a changed line is redone, nothing is duplicated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBatchWith, parseBatchLine } from '../lib/edit/batch.js';
import { loadEdit } from '../lib/edit/edit-file.js';
import { referenceSolver } from '../lib/edit/solve.js';
import { fakeTokenizer as tokenizer } from './fake-tokenizer.js';

function fakeCtx() {
  const calls = [];
  return {
    calls,
    fingerprint: 'fp-test',
    map: { layers: new Array(3).fill({}) },
    pipeline: {
      tokenizer,
      async encodePrompts(prompts) {
        calls.push(prompts.length);
        const out = new Float32Array(prompts.length * 77 * 8);
        prompts.forEach((p, k) => {
          for (let i = 0; i < 77 * 8; i++) out[k * 77 * 8 + i] = Math.sin(0.1 * i * (1 + p.length) + k);
        });
        return out;
      },
    },
  };
}
const rows = (dir) => readFileSync(join(dir, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

test('batch lines: parsing and validation messages', () => {
  assert.deepEqual(parseBatchLine('{"source":"a","dest":"b","only_v":true,"augmentations":false}').pairs, [{ source: 'a', destination: 'b' }]);
  assert.equal(parseBatchLine('{"source":"a","destination":"b","onlyV":true}').mode, 'v');
  assert.throws(() => parseBatchLine('[1]'), /must be a JSON object/);
  assert.throws(() => parseBatchLine('{"source":"a"}'), /"source" and "destination" must be strings/);
  assert.throws(() => parseBatchLine('{"source":"a","destination":"b","lambda":"x"}'), /"lambda" must be a number/);
});

test('batch: per-line results, bad lines isolated, resumable without duplicates', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batch-'));
  try {
    const file = join(dir, 'edits.jsonl');
    writeFileSync(file, [
      '{"source":"a circle","destination":"a blue circle"}',
      '{"source":"a square","destination":"an orange square","onlyV":true,"augmentations":false}',
      'not json',
      '',
      '{"source":"a circle","destination":"a blue square"}',
      '{"source":"a circle","destination":"a blue circle","lambda":-1}',
    ].join('\n'));
    const out = join(dir, 'out');
    const ctx = fakeCtx();
    const s1 = await runBatchWith(ctx, file, out, { quiet: true, chunk: 4 }, referenceSolver);
    assert.deepEqual([s1.total, s1.ok, s1.errors, s1.skipped], [5, 2, 3, 0]);
    assert.deepEqual(ctx.calls, [8 + 2], 'the first chunk encodes all its prompts in one call (the second chunk has only errors)');
    const r = rows(out).sort((a, b) => a.line - b.line);
    assert.deepEqual(r.map((x) => [x.line, x.status]), [[1, 'ok'], [2, 'ok'], [3, 'error'], [5, 'error'], [6, 'error']]);
    assert.match(r[2].error, /not valid JSON/);
    assert.match(r[3].error, /source word 'circle'/);
    assert.match(r[4].error, /λ must be a number > 0/);
    assert.deepEqual(readdirSync(join(out, 'edits')).sort(), ['line-00001.safetensors', 'line-00002.safetensors']);
    const e2 = await loadEdit(join(out, 'edits', 'line-00002.safetensors'), 'fp-test');
    assert.equal(e2.steps[0].mode, 'v');
    assert.equal(e2.steps[0].rows, 77);

    // Rerun: nothing to do.
    const s2 = await runBatchWith(fakeCtx(), file, out, { quiet: true }, referenceSolver);
    assert.deepEqual([s2.ok, s2.errors, s2.skipped], [0, 0, 5]);
    assert.equal(rows(out).length, 5);

    // A crash tore the last row, and line 5 was fixed: both are redone, the stale row of line 5 disappears.
    const kept = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n');
    const withoutLine1 = kept.filter((l) => JSON.parse(l).line !== 1);
    writeFileSync(join(out, 'results.jsonl'), withoutLine1.join('\n') + '\n');
    appendFileSync(join(out, 'results.jsonl'), '{"line":1,"key":"9be9');
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[4] = '{"source":"a circle","destination":"a blue circle","lambda":0.5}';
    writeFileSync(file, lines.join('\n'));
    const s3 = await runBatchWith(fakeCtx(), file, out, { quiet: true }, referenceSolver);
    assert.deepEqual([s3.ok, s3.errors, s3.skipped], [2, 0, 3]);
    const final = rows(out);
    assert.deepEqual(final.map((x) => x.line).sort(), [1, 2, 3, 5, 6]);
    assert.equal(final.find((x) => x.line === 5).status, 'ok');
    assert.equal(final.find((x) => x.line === 5).lambda, 0.5);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

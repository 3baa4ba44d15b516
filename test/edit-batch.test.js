// edit --batch: one edit file and one result row per line, bad lines reported without stopping the others,
// reruns skip finished lines, retry failed ones, redo a torn last row, a changed line, and lines whose effective
// settings (run defaults, model) changed; nothing is duplicated. Also: the library writers (writePng, saveEdit,
// saveModel) create a missing parent folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBatchWith, parseBatchLine } from '../lib/edit/batch.js';
import { loadEdit } from '../lib/edit/edit-file.js';
import { saveEdit } from '../lib/edit/edit-file.js';
import { referenceSolver } from '../lib/solver/select.js';
import { decodePng, writePng } from '../lib/image/png.js';
import { loadModel, saveModel } from '../lib/model/onnx/index.js';
import { fakeTokenizer as tokenizer } from './fake-tokenizer.js';

const PAPER_AUGMENTATIONS = ['A photo of ', 'An image of ', 'A picture of '];

function fakeCtx(fingerprint = 'fp-test') {
  const calls = [];
  return {
    calls,
    fingerprint,
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
const rows = (dir) =>
  readFileSync(join(dir, 'results.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

test('batch lines: parsing and validation messages', () => {
  assert.deepEqual(parseBatchLine('{"source":"a","dest":"b","only_v":true,"augmentations":false}').pairs, [
    { source: 'a', destination: 'b' },
  ]);
  assert.equal(parseBatchLine('{"source":"a","destination":"b","onlyV":true}').mode, 'v');
  assert.throws(() => parseBatchLine('[1]'), /must be a JSON object/);
  assert.throws(() => parseBatchLine('{"source":"a"}'), /"source" and "destination" must be strings/);
  assert.throws(() => parseBatchLine('{"source":"a","destination":"b","lambda":"x"}'), /"lambda" must be a number/);
});

test('batch: per-line results, bad lines isolated, resumable without duplicates', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batch-'));
  try {
    const file = join(dir, 'edits.jsonl');
    writeFileSync(
      file,
      [
        '{"source":"a circle","destination":"a blue circle"}',
        '{"source":"a square","destination":"an orange square","onlyV":true,"augmentations":false}',
        'not json',
        '',
        '{"source":"a circle","destination":"a blue square"}',
        '{"source":"a circle","destination":"a blue circle","lambda":-1}',
      ].join('\n'),
    );
    const out = join(dir, 'out');
    const ctx = fakeCtx();
    const s1 = await runBatchWith(ctx, file, out, { chunk: 4 }, referenceSolver);
    assert.deepEqual([s1.total, s1.ok, s1.errors, s1.skipped], [5, 2, 3, 0]);
    assert.deepEqual(ctx.calls, [8 + 2], 'the first chunk encodes all its prompts in one call (the second chunk has only errors)');
    const r = rows(out).sort((a, b) => a.line - b.line);
    assert.deepEqual(
      r.map((x) => [x.line, x.status]),
      [
        [1, 'ok'],
        [2, 'ok'],
        [3, 'error'],
        [5, 'error'],
        [6, 'error'],
      ],
    );
    assert.match(r[2].error, /not valid JSON/);
    assert.match(r[3].error, /source word 'circle'/);
    assert.match(r[4].error, /λ must be a number > 0/);
    assert.deepEqual(readdirSync(join(out, 'edits')).sort(), ['line-00001.safetensors', 'line-00002.safetensors']);
    const e2 = await loadEdit(join(out, 'edits', 'line-00002.safetensors'), 'fp-test');
    assert.equal(e2.steps[0].mode, 'v');
    assert.equal(e2.steps[0].rows, 77);

    // Rerun: the good lines are skipped, the failed ones are tried again (and fail again), one row per line.
    const s2 = await runBatchWith(fakeCtx(), file, out, {}, referenceSolver);
    assert.deepEqual([s2.ok, s2.errors, s2.skipped, s2.retried, s2.recomputed], [0, 3, 2, 3, 0]);
    assert.equal(rows(out).length, 5);

    // A crash tore the last row, and line 5 was fixed: both are redone, the stale row of line 5 disappears.
    const kept = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n');
    const withoutLine1 = kept.filter((l) => JSON.parse(l).line !== 1);
    writeFileSync(join(out, 'results.jsonl'), `${withoutLine1.join('\n')}\n`);
    appendFileSync(join(out, 'results.jsonl'), '{"line":1,"key":"9be9');
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[4] = '{"source":"a circle","destination":"a blue circle","lambda":0.5}';
    writeFileSync(file, lines.join('\n'));
    const s3 = await runBatchWith(fakeCtx(), file, out, {}, referenceSolver);
    assert.deepEqual([s3.ok, s3.errors, s3.skipped], [2, 2, 1]);
    const final = rows(out);
    assert.deepEqual(final.map((x) => x.line).sort(), [1, 2, 3, 5, 6]);
    assert.equal(final.find((x) => x.line === 5).status, 'ok');
    assert.equal(final.find((x) => x.line === 5).lambda, 0.5);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const writeLines = (file, lines) => writeFileSync(file, `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);
const editOf = (out, line) => loadEdit(join(out, 'edits', `line-0000${line}.safetensors`), 'fp-test');

test('batch defaults: a line without a field takes the run default, a line with it keeps its own', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batch-'));
  try {
    const file = join(dir, 'edits.jsonl');
    writeLines(file, [
      { source: 'a circle', destination: 'a blue circle' },
      { source: 'a circle', destination: 'a blue circle', lambda: 0.25, onlyV: false, augmentations: true, preserve: [] },
      { source: 'a square', destination: 'an orange square', augmentations: ['A photo of '] },
    ]);
    const out = join(dir, 'out');
    const defaults = { lambda: 2, onlyV: true, augmentations: [], preserve: ['a square'] };
    const s = await runBatchWith(fakeCtx(), file, out, { defaults }, referenceSolver);
    assert.deepEqual([s.ok, s.errors], [3, 0]);
    const [e1, e2, e3] = [await editOf(out, 1), await editOf(out, 2), await editOf(out, 3)];
    assert.deepEqual([e1.steps[0].lambda, e1.steps[0].mode, e1.steps[0].augmentations, e1.steps[0].preserve], [2, 'v', [], ['a square']]);
    assert.deepEqual(
      [e2.steps[0].lambda, e2.steps[0].mode, e2.steps[0].augmentations, e2.steps[0].preserve],
      [0.25, 'kv', PAPER_AUGMENTATIONS, []],
    );
    assert.deepEqual(
      [e3.steps[0].lambda, e3.steps[0].mode, e3.steps[0].augmentations, e3.steps[0].preserve],
      [2, 'v', ['A photo of '], ['a square']],
    );
    const r = rows(out);
    assert.deepEqual(
      r.map((x) => [x.lambda, x.onlyV, x.augmentations, x.preserve, x.fingerprint]),
      [
        [2, true, [], ['a square'], 'fp-test'],
        [0.25, false, PAPER_AUGMENTATIONS, [], 'fp-test'],
        [2, true, ['A photo of '], ['a square'], 'fp-test'],
      ],
    );
    // Without defaults: λ 0.1, K and V, the paper's templates, no preserve prompts.
    const plain = parseBatchLine('{"source":"a","destination":"b"}');
    assert.deepEqual([plain.lambda, plain.mode, plain.augmentations, plain.preserve], [0.1, 'kv', PAPER_AUGMENTATIONS, []]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('batch rerun with another default λ or another model recomputes exactly the lines it affects', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batch-'));
  try {
    const file = join(dir, 'edits.jsonl');
    writeLines(file, [
      { source: 'a circle', destination: 'a blue circle' },
      { source: 'a circle', destination: 'a blue circle', lambda: 0.25 },
    ]);
    const out = join(dir, 'out');
    await runBatchWith(fakeCtx(), file, out, { defaults: { lambda: 2 } }, referenceSolver);
    const before = readFileSync(join(out, 'edits', 'line-00001.safetensors'));
    const s = await runBatchWith(fakeCtx(), file, out, { defaults: { lambda: 0.5 } }, referenceSolver);
    assert.deepEqual(
      [s.ok, s.errors, s.skipped, s.recomputed, s.retried],
      [1, 0, 1, 1, 0],
      'line 1 (default λ) is recomputed, line 2 (own λ) is kept',
    );
    assert.deepEqual(
      rows(out).map((x) => [x.line, x.lambda]),
      [
        [1, 0.5],
        [2, 0.25],
      ],
      'one row per line, each with the λ its edit was computed with',
    );
    assert.equal((await editOf(out, 1)).steps[0].lambda, 0.5);
    assert.notDeepEqual(readFileSync(join(out, 'edits', 'line-00001.safetensors')), before);
    // The same default again: nothing to do.
    const again = await runBatchWith(fakeCtx(), file, out, { defaults: { lambda: 0.5 } }, referenceSolver);
    assert.deepEqual([again.ok, again.skipped], [0, 2]);
    // Another model: every line is recomputed for it.
    const other = await runBatchWith(fakeCtx('fp-other'), file, out, { defaults: { lambda: 0.5 } }, referenceSolver);
    assert.deepEqual([other.ok, other.skipped, other.recomputed], [2, 0, 2]);
    assert.deepEqual(
      rows(out).map((x) => x.fingerprint),
      ['fp-other', 'fp-other'],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('batch rerun retries failed lines; the success replaces the failure', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batch-'));
  try {
    const file = join(dir, 'edits.jsonl');
    writeLines(file, [
      { source: 'a circle', destination: 'a blue circle' },
      { source: 'a square', destination: 'an orange square' },
      { source: 'a circle', destination: 'an orange circle' },
    ]);
    const out = join(dir, 'out');
    // The solver fails for the second chunk (lines 2 and 3), e.g. out of memory on the device.
    let calls = 0;
    const flaky = {
      name: 'flaky',
      solve: (d, items) => (++calls === 2 ? Promise.reject(new Error('device out of memory')) : referenceSolver.solve(d, items)),
    };
    const s1 = await runBatchWith(fakeCtx(), file, out, { chunk: 1 }, flaky);
    assert.deepEqual([s1.ok, s1.errors], [2, 1]);
    assert.deepEqual(
      rows(out).map((x) => [x.line, x.status]),
      [
        [1, 'ok'],
        [2, 'error'],
        [3, 'ok'],
      ],
    );
    assert.equal(existsSync(join(out, 'edits', 'line-00002.safetensors')), false);

    const s2 = await runBatchWith(fakeCtx(), file, out, {}, referenceSolver);
    assert.deepEqual([s2.total, s2.ok, s2.errors, s2.skipped, s2.retried, s2.recomputed], [3, 1, 0, 2, 1, 0]);
    const r = rows(out);
    assert.deepEqual(
      r.map((x) => [x.line, x.status]),
      [
        [1, 'ok'],
        [2, 'ok'],
        [3, 'ok'],
      ],
      'one row per line, the latest attempt',
    );
    assert.equal((await editOf(out, 2)).steps[0].pairs[0].destination, 'an orange square');

    // A run killed after appending a retry's row leaves both rows: the later one is the line's result.
    const text = readFileSync(join(out, 'results.jsonl'), 'utf8').split('\n');
    text.splice(1, 0, JSON.stringify({ line: 2, key: r[1].key, status: 'error', error: 'device out of memory' }));
    writeFileSync(join(out, 'results.jsonl'), text.join('\n'));
    const s3 = await runBatchWith(fakeCtx(), file, out, {}, referenceSolver);
    assert.deepEqual([s3.ok, s3.errors, s3.skipped, s3.retried], [0, 0, 3, 0]);
    assert.equal(rows(out).length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writePng, saveEdit and saveModel create a missing parent folder (and leave no temp files)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'writers-'));
  try {
    const png = join(dir, 'a', 'b', 'x.png');
    await writePng(png, { width: 1, height: 1, rgb: new Uint8Array([1, 2, 3]) });
    assert.deepEqual([...decodePng(readFileSync(png)).rgb], [1, 2, 3]);
    assert.deepEqual(readdirSync(join(dir, 'a', 'b')), ['x.png']);

    const edit = join(dir, 'c', 'd', 'e.safetensors');
    saveEdit(edit, {
      d: 2,
      fingerprint: 'fp-test',
      steps: [
        { pairs: [], preserve: [], lambda: 0.1, augmentations: [], mode: 'kv', rows: 1, D: new Float32Array(2), G: new Float32Array(2) },
      ],
    });
    assert.equal((await loadEdit(edit, 'fp-test')).d, 2);
    assert.deepEqual(readdirSync(join(dir, 'c', 'd')), ['e.safetensors']);

    const fixture = new URL('./fixtures/tiny-unet.onnx', import.meta.url).pathname;
    saveModel((await loadModel(fixture)).model, join(dir, 'h', 'model.onnx'));
    assert.deepEqual(readFileSync(join(dir, 'h', 'model.onnx')), readFileSync(fixture));
    assert.deepEqual(readdirSync(join(dir, 'h')), ['model.onnx']);
    const { model } = await loadModel(fixture);
    const onnx = join(dir, 'f', 'g', 'model.onnx');
    saveModel(model, onnx, { externalData: { location: 'weights/data.pb', threshold: 0 } });
    assert.deepEqual(readdirSync(join(dir, 'f', 'g')).sort(), ['model.onnx', 'weights']);
    assert.deepEqual(readdirSync(join(dir, 'f', 'g', 'weights')), ['data.pb']);
    const back = await loadModel(onnx);
    assert.equal(back.model.graph.initializer.length, model.graph.initializer.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('batch: progress goes to onProgress (0 first, then after each chunk), nothing to the terminal, no temporary files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batch-'));
  const stderrWrite = process.stderr.write;
  const stdoutWrite = process.stdout.write;
  const printed = [];
  try {
    const file = join(dir, 'edits.jsonl');
    writeLines(file, [
      { source: 'a circle', destination: 'a blue circle' },
      { source: 'a square', destination: 'an orange square' },
      { source: 'a circle', destination: 'an orange circle' },
    ]);
    const out = join(dir, 'out');
    const seen = [];
    // Text is what the library would print; Buffers are node:test's own reports (the batch awaits file I/O, so the
    // runner gets turns meanwhile) and go on to the real stream.
    process.stderr.write = process.stdout.write = (chunk, ...rest) => {
      if (typeof chunk !== 'string') return stdoutWrite.call(process.stdout, chunk, ...rest);
      printed.push(chunk);
      return true;
    };
    let s;
    try {
      s = await runBatchWith(fakeCtx(), file, out, { chunk: 2, onProgress: (done, total) => seen.push([done, total]) }, referenceSolver);
    } finally {
      process.stderr.write = stderrWrite;
      process.stdout.write = stdoutWrite;
    }
    assert.equal(s.ok, 3);
    assert.deepEqual(seen, [
      [0, 3],
      [2, 3],
      [3, 3],
    ]);
    assert.deepEqual(printed, [], 'the library printed nothing');
    assert.deepEqual(readdirSync(out).sort(), ['edits', 'results.jsonl'], 'no temporary file and no lock left in --out');
    const again = [];
    await runBatchWith(fakeCtx(), file, out, { onProgress: (done, total) => again.push([done, total]) }, referenceSolver);
    assert.deepEqual(again, [[0, 0]], 'a rerun with nothing to do reports an empty run');
  } finally {
    process.stderr.write = stderrWrite;
    process.stdout.write = stdoutWrite;
    rmSync(dir, { recursive: true, force: true });
  }
});

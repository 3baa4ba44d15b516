// Editing from a checkpoint: the edit solved from the embedded model's weights written as a checkpoint (single
// file and diffusers folder, by the fixture script from the ONNX initializers) equals the edit solved from the
// ONNX export itself; `edit`, `edit --batch` and `tokenize` take a checkpoint as --model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeModelEdit, openCheckpointEditContext, openEditContext, openModelForEdit } from '../lib/edit/context.js';
import { loadEdit } from '../lib/edit/edit-file.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { checkpointFixtures, relativeError } from './fixtures/checkpoint-fixtures.js';

const fx = checkpointFixtures();
const skip = fx.skip;
const toy = (p) => join(fx.dir, 'toy', p);
const cli = (args) => spawnSync(process.execPath, ['lib/cli.js', ...args], { encoding: 'utf8' });
const REQUEST = { pairs: [{ source: 'a circle', destination: 'a purple circle' }], preserve: ['a square'] };

test('the edit from a checkpoint equals the edit from the ONNX export of the same weights', { skip }, async () => {
  // toy-shapes-base: the embedded folder without its text-state lift, which a CLIP checkpoint cannot hold.
  const pipeline = await loadPipeline(toy('toy-shapes-base'));
  let expected;
  try {
    expected = (await computeModelEdit(await openEditContext(pipeline), REQUEST)).edit;
  } finally {
    await pipeline.close();
  }
  const fingerprints = [];
  for (const [path, options] of [
    [toy('toy-diffusers'), {}],
    [toy('toy-shapes.safetensors'), { tokenizer: 'models/toy-shapes/tokenizer', textHeads: 4 }],
  ]) {
    const ctx = await openCheckpointEditContext(path, options);
    try {
      assert.equal(ctx.map.layers.length, 16);
      const { edit } = await computeModelEdit(ctx, REQUEST);
      assert.equal(edit.d, expected.d);
      const [got, want] = [edit.steps[0], expected.steps[0]];
      assert.equal(got.rows, want.rows);
      assert.ok(relativeError(got.D, want.D) < 1e-4, `${path}: D differs by ${relativeError(got.D, want.D)}`);
      assert.ok(relativeError(got.G, want.G) < 1e-4, `${path}: G differs by ${relativeError(got.G, want.G)}`);
      fingerprints.push(ctx.fingerprint);
    } finally {
      await ctx.pipeline.close();
    }
  }
  assert.equal(fingerprints[0], fingerprints[1], 'the same values in another layout: the same fingerprint');
  const other = await openModelForEdit(join(fx.dir, 'tiny', 'diffusers'));
  try {
    assert.notEqual(other.ctx.fingerprint, fingerprints[0]);
  } finally {
    await other.close();
  }
});

test('edit --model CHECKPOINT writes the edit file and reports where the time went', { skip }, () => {
  const out = mkdtempSync(join(tmpdir(), 'time-edit-ckpt-edit-'));
  try {
    const r = cli(['edit', '--model', toy('toy-diffusers'), '--source', 'a circle', '--dest', 'a purple circle', '--out', out, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.model.kind, 'diffusers');
    assert.equal(s.grid, null);
    assert.equal(s.layers.length, 16);
    assert.equal(s.layers[6].name, '/mid_block/attentions.0/transformer_blocks.0/attn2');
    for (const k of ['readMs', 'textEncoderLoadMs', 'textEncodingMs', 'solveMs', 'writeMs', 'totalMs', 'peakRssMb'])
      assert.equal(typeof s.timings[k], 'number', k);
    return loadEdit(s.edit, s.fingerprint).then((edit) => assert.equal(edit.d, 128));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a single file needs --tokenizer; sampling flags are refused with a checkpoint', { skip }, () => {
  const base = [
    'edit',
    '--model',
    toy('toy-shapes.safetensors'),
    '--source',
    'a circle',
    '--dest',
    'a purple circle',
    '--out',
    join(tmpdir(), 'never-written'),
  ];
  const noTok = cli(base);
  assert.equal(noTok.status, 2);
  assert.match(
    noTok.stderr,
    /^time-edit: --tokenizer must name a tokenizer folder: .* is a single-file checkpoint, which holds no tokenizer/,
  );
  const grid = cli([...base, '--tokenizer', 'models/toy-shapes/tokenizer', '--seeds', '0-1', '--steps', '2']);
  assert.equal(grid.status, 2);
  assert.match(grid.stderr, /--seeds, --steps need sampling, which needs an ONNX pipeline folder/);
  const onnxTok = cli(['edit', '--source', 'a circle', '--dest', 'a purple circle', '--tokenizer', 'x', '--no-grid']);
  assert.equal(onnxTok.status, 2);
  assert.match(onnxTok.stderr, /--tokenizer is for a single-file checkpoint/);
});

test('edit --batch and tokenize take a checkpoint --model', { skip }, () => {
  const out = mkdtempSync(join(tmpdir(), 'time-edit-ckpt-batch-'));
  try {
    const file = join(out, 'edits.jsonl');
    writeFileSync(file, '{"source":"a circle","destination":"a purple circle"}\n{"source":"a star","destination":"an orange star"}\n');
    const r = cli([
      'edit',
      '--batch',
      file,
      '--model',
      toy('toy-shapes.safetensors'),
      '--tokenizer',
      'models/toy-shapes/tokenizer',
      '--out',
      join(out, 'o'),
      '--json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.deepEqual([s.ok, s.errors, s.layers], [2, 0, 16]);
    const rows = readFileSync(join(out, 'o', 'results.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.ok(rows.every((row) => row.status === 'ok'));
    const fromFolder = cli(['tokenize', '--model', toy('toy-diffusers'), 'a big purple circle']);
    const embedded = cli(['tokenize', 'a big purple circle']);
    assert.equal(fromFolder.status, 0, fromFolder.stderr);
    assert.equal(fromFolder.stdout, embedded.stdout);
    const single = cli(['tokenize', '--model', toy('toy-shapes.safetensors'), 'a circle']);
    assert.equal(single.status, 2);
    assert.match(single.stderr, /single-file checkpoint, which holds no tokenizer: give --tokenizer DIR/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

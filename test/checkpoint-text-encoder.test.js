// The CLIP text encoder built from a checkpoint's own tensors (lib/checkpoint/text-encoder.ts) against the fixture
// script's independent PyTorch forward pass (float64, written from the published architecture): tiny in F32, F16,
// BF16, mixed (with a corrupted position_ids that must be ignored), legacy keys, a diffusers folder, the embedded
// model's weights, and the full CLIP ViT-L/14 shape; and against the embedded model's own ONNX text encoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint } from '../lib/checkpoint/open-checkpoint.js';
import { CheckpointTextEncoder } from '../lib/checkpoint/text-encoder.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { checkpointFixtures, readReference, relativeError } from './fixtures/checkpoint-fixtures.js';

const fx = checkpointFixtures();
const skip = fx.skip;
const TOLERANCE = 1e-5;

async function encodeReference(path, folder, name, options = {}) {
  const ref = readReference(folder, name);
  const enc = await CheckpointTextEncoder.open(openCheckpoint(path, options));
  try {
    const out = await enc.encode(Int32Array.from(ref.ids.flat()), ref.ids.length);
    return { error: relativeError(out, ref.values), out };
  } finally {
    await enc.close();
  }
}

test('tiny CLIP text encoders in every dtype and layout equal PyTorch to 1e-5', { skip }, async () => {
  const folder = join(fx.dir, 'tiny');
  for (const name of ['f32', 'f16', 'bf16', 'mixed', 'legacy', 'diffusers']) {
    const path = join(folder, name === 'diffusers' ? 'diffusers' : `${name}.safetensors`);
    const { error } = await encodeReference(path, folder, name);
    assert.ok(error <= TOLERANCE, `${name}: relative error ${error}`);
  }
});

test('the full CLIP ViT-L/14 shape (12 layers, width 768, 49408 tokens) equals PyTorch to 1e-5', { skip }, async () => {
  const { error } = await encodeReference(join(fx.dir, 'full', 'sd15-layout.safetensors'), join(fx.dir, 'full'), 'full');
  assert.ok(error <= TOLERANCE, `relative error ${error}`);
});

test("the embedded model's weights as a checkpoint equal its ONNX text encoder (before the lift) and PyTorch", { skip }, async () => {
  const folder = join(fx.dir, 'toy');
  // Its text encoder has 4 heads of 32: a single file cannot say so (width / 64 = 2 would be CLIP's rule).
  const single = await encodeReference(join(folder, 'toy-shapes.safetensors'), folder, 'toy', { textHeads: 4 });
  const dir = await encodeReference(join(folder, 'toy-diffusers'), folder, 'toy'); // config.json says 4
  assert.ok(single.error <= TOLERANCE, `single file: ${single.error}`);
  assert.ok(dir.error <= TOLERANCE, `diffusers folder: ${dir.error}`);
  const wrong = await encodeReference(join(folder, 'toy-shapes.safetensors'), folder, 'toy');
  assert.ok(wrong.error > 1e-3, 'the test can fail: 2 heads instead of 4 give other states');

  const ckpt = openCheckpoint(join(folder, 'toy-diffusers'));
  const pipeline = await loadPipeline(join(folder, 'toy-shapes-base'));
  const enc = await CheckpointTextEncoder.open(ckpt);
  try {
    const prompts = ['a circle', 'a photo of a big purple star', ''];
    const onnx = await pipeline.encodePrompts(prompts);
    const ids = new Int32Array(prompts.length * 77);
    prompts.forEach((p, k) => ids.set(pipeline.tokenizer.encode(p).ids, k * 77));
    const ours = await enc.encode(ids, prompts.length);
    const e = relativeError(ours, onnx);
    assert.ok(e <= TOLERANCE, `vs the ONNX text encoder: ${e}`);
  } finally {
    await enc.close();
    await pipeline.close();
  }
});

test('the temporary graph + weights folder is gone once the session exists; bad ids are refused', { skip }, async () => {
  const temp = mkdtempSync(join(tmpdir(), 'time-edit-te-test-'));
  try {
    const enc = await CheckpointTextEncoder.open(openCheckpoint(join(fx.dir, 'tiny', 'f16.safetensors')), { tempDir: temp });
    try {
      assert.deepEqual(readdirSync(temp), [], 'nothing left on disk');
      assert.equal(enc.weightsSha256.length, 64);
      await assert.rejects(enc.encode(new Int32Array(77).fill(673), 1), /outside the text encoder's vocabulary of 673/);
      await assert.rejects(enc.encode(new Int32Array(76), 1), /batch × 77/);
      const again = await enc.encode(new Int32Array(77).fill(672), 1);
      assert.equal(again.length, 77 * 128);
    } finally {
      await enc.close();
    }
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
});

// The memory plan (lib/sample/memory-plan.ts): the planner's choices on given budgets, hand-computed from the
// estimate's formula; a run that cannot fit refused before any UNet call, in one line naming the numbers;
// batching (images per UNet call and per VAE call) never changing an image's bytes; the default plan on the
// embedded model keeping today's batching; weights mode and V-only holding one UNet session at a time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../lib/errors.js';
import { computeModelEdit, openEditContext, prepareEditedGeneration } from '../lib/edit/context.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { generate, MemoryBudgetError, planGenerateMemory } from '../lib/sample/generate.js';
import { planMemory } from '../lib/sample/memory-plan.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const haveEmbedded = existsSync(join(root, 'models', 'toy-shapes', 'unet', 'model.onnx'));

// SD 1.x's attention layout at 512×512 (8 heads, N = 64·64) with small widths, 8 images with guidance.
const sd512 = {
  budgetBytes: 4e9,
  weightBytes: 60e6,
  heads: 8,
  positions: 4096,
  baseChannels: 32,
  vaeChannels: 64,
  pixels: 512 * 512,
  images: 8,
  rowsPerImage: 2,
};

test('planner: SD layout at 512², 4 GB: 1 image per call, 16 slices (the only setting under the attention target)', () => {
  // perRow(S) = 4·(4·8·4096·⌈4096/S⌉) + 4·100·32·4096 = 524288·⌈4096/S⌉ + 52428800; a call's attention is
  // rows · 524288 · 4096/S, under 512e6 only at 1 image (2 rows) and 16 slices (268435456).
  // decode: 4·(4·64 + 6)·262144 = 274726912 per image, 1 per call (2 would pass 512e6); images 8·3·262144.
  const plan = planMemory(sd512);
  assert.equal(plan.imagesPerCall, 1);
  assert.equal(plan.attentionSlices, 16);
  assert.equal(plan.imagesPerDecode, 1);
  assert.equal(plan.fits, true);
  assert.equal(plan.estimate.perRow, 524288 * 256 + 52428800);
  assert.equal(plan.estimate.attention, 2 * 524288 * 256);
  assert.equal(plan.estimate.total, 150e6 + 60e6 + 2 * (524288 * 256 + 52428800) + 274726912 + 8 * 3 * 262144);
  assert.equal(plan.estimate.total, 864311424);
});

test('planner: a fixed 8 images per call gets the fewest slices that fit the budget (16 at 4 GB)', () => {
  // 16 rows: S = 8 → 210e6 + 16·320864256 + 281018368 = 5624846464 > 4e9; S = 16 → 16·186646528 + … = 3477362816.
  const plan = planMemory({ ...sd512, imagesPerCall: 8 });
  assert.deepEqual([plan.imagesPerCall, plan.attentionSlices, plan.fits], [8, 16, true]);
  assert.equal(plan.estimate.total, 3477362816);
  const tight = planMemory({ ...sd512, imagesPerCall: 8, budgetBytes: 3.4e9 });
  assert.equal(tight.fits, false);
});

test('planner: fixed slices are kept; nothing fits a 700 MB budget at 512² (smallest setting quoted)', () => {
  const fixed = planMemory({ ...sd512, imagesPerCall: 8, attentionSlices: 1 });
  assert.deepEqual([fixed.imagesPerCall, fixed.attentionSlices, fixed.fits], [8, 1, false]);
  assert.equal(fixed.estimate.total, 210e6 + 16 * (2147483648 + 52428800) + 274726912 + 6291456);
  const small = planMemory({ ...sd512, budgetBytes: 700e6 });
  assert.deepEqual([small.imagesPerCall, small.attentionSlices, small.fits], [1, 16, false]);
  assert.equal(small.estimate.total, 864311424);
});

test('planner: the toy model at 32² keeps one call for all images, unsliced', () => {
  // N = 64: a call of 4 images (8 rows) holds 8 · 4·4·4·64·64 = 2097152 bytes of attention.
  const plan = planMemory({
    budgetBytes: 1e9,
    weightBytes: 17e6,
    heads: 4,
    positions: 64,
    baseChannels: 32,
    vaeChannels: 32,
    pixels: 1024,
    images: 4,
    rowsPerImage: 2,
  });
  assert.deepEqual([plan.imagesPerCall, plan.attentionSlices, plan.imagesPerDecode, plan.fits], [4, 1, 4, true]);
  assert.equal(plan.estimate.attention, 2097152);
});

test('embedded model: the default plan at 32² is 8 images per call, unsliced (today’s batching)', { skip: !haveEmbedded }, async () => {
  const p = await loadPipeline();
  try {
    const o = { prompts: ['a circle'], seeds: Array.from({ length: 50 }, (_, i) => i), guidance: 7.5, height: 32, width: 32 };
    const plan = planGenerateMemory(p, { ...o, maxMemoryBytes: 2e9 });
    assert.deepEqual([plan.imagesPerCall, plan.attentionSlices, plan.imagesPerDecode], [8, 1, 8]);
    assert.equal(p.sessionsCreated().includes('unet'), false, 'planning creates no session');
  } finally {
    await p.close();
  }
});

test('a budget too small is refused before any UNet call, in one line naming the numbers', { skip: !haveEmbedded }, async () => {
  const p = await loadPipeline();
  try {
    const o = { prompts: ['a circle'], seeds: [0, 1], steps: 2, guidance: 7.5, height: 256, width: 256, maxMemoryBytes: 300e6 };
    o.onProgress = () => assert.fail('a UNet call was made');
    await assert.rejects(generate(p, o), (e) => {
      assert.ok(e instanceof MemoryBudgetError && e instanceof InputError, e.name);
      assert.equal(e.message.includes('\n'), false);
      assert.match(
        e.message,
        /^the run \(height 256, width 256, batchSize 1\) needs an estimated [\d.]+ MB \(2 UNet rows × [\d.]+ MB at 16 attention slices/,
      );
      assert.match(
        e.message,
        /more than maxMemoryBytes \(300 MB\); raise maxMemoryBytes if the machine has more: use smaller images or a smaller batch$/,
      );
      assert.equal(e.budgetBytes, 300e6);
      assert.equal(e.plan.fits, false);
      return true;
    });
    assert.equal(p.sessionsCreated().includes('unet'), false);
  } finally {
    await p.close();
  }
});

test('batching does not change bytes: 3 seeds in calls of 1, 2 or 3 images, and VAE calls of 1', { skip: !haveEmbedded }, async () => {
  const p = await loadPipeline(undefined, { threads: 2 });
  try {
    const o = { prompts: ['a red circle', 'a blue square'], seeds: [0, 1, 2], steps: 3, guidance: 7.5, height: 32, width: 32 };
    const ref = await generate(p, { ...o, batchSize: 6 });
    for (const batchSize of [1, 2, 4]) {
      const imgs = await generate(p, { ...o, batchSize });
      assert.deepEqual(
        imgs.map((i) => [i.prompt, i.seed]),
        ref.map((i) => [i.prompt, i.seed]),
      );
      for (const [k, img] of imgs.entries()) assert.deepEqual(img.rgb, ref[k].rgb, `batch ${batchSize}, image ${k}`);
    }
    const latents = Float32Array.from({ length: 3 * 4 * 8 * 8 }, (_, i) => Math.sin(i) * 0.5);
    const all = await p.decode(latents, [3, 4, 8, 8]);
    const one = await p.decode(latents, [3, 4, 8, 8], 1);
    assert.deepEqual(one.dims, all.dims);
    assert.deepEqual(one.data, all.data);
  } finally {
    await p.close();
  }
});

test('weights mode and V-only: one UNet session at a time (the folder UNet is released first)', { skip: !haveEmbedded }, async () => {
  const p = await loadPipeline(undefined, { threads: 2 });
  try {
    const ctx = await openEditContext(p);
    const o = { prompts: ['a circle'], seeds: [0], steps: 2, guidance: 7.5, height: 32, width: 32 };
    const before = await generate(p, o);
    const unets = () => p.host.liveSessions().filter((k) => k.startsWith('unet'));
    assert.equal(unets().length, 1);
    for (const [mode, editMode] of [
      ['weights', 'kv'],
      ['embedding', 'v'],
    ]) {
      const { edit } = await computeModelEdit(ctx, {
        pairs: [{ source: 'a circle', destination: 'a purple circle' }],
        lambda: 0.1,
        augmentations: [],
        mode: editMode,
        preserve: [],
      });
      const g = await prepareEditedGeneration(ctx, edit, mode);
      try {
        assert.notEqual(g.pipeline, p);
        assert.equal(unets().length, 1, `${mode}/${editMode}: ${unets().join(', ')}`);
        await generate(g.pipeline, await g.options(o));
        assert.equal(unets().length, 1);
      } finally {
        await g.close();
      }
      assert.equal(unets().length, 0);
      // The folder UNet comes back on its next run, with the same images.
      const again = await generate(p, o);
      assert.deepEqual(again[0].rgb, before[0].rgb);
      assert.equal(unets().length, 1);
    }
  } finally {
    await p.close();
  }
});

// End to end on the embedded model (skipped until models/toy-shapes exists): 16 cross-attention layers found;
// embedding mode, weights mode and an exported pipeline folder give the same UNet outputs and the same images;
// an edit with C* = C changes nothing; an edit file made for another model is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { loadModel, saveModel } from '../lib/model/onnx/index.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPipeline, defaultModelDir } from '../lib/model/pipeline.js';
import { generate } from '../lib/sample/generate.js';
import { openEditContext, computeModelEdit, prepareEditedGeneration, prepareEditFile } from '../lib/edit/context.js';
import { editedConditioning, exportEditedPipeline } from '../lib/edit/apply.js';
import { saveEdit } from '../lib/edit/edit-file.js';
import { gaussianNoise } from '../lib/sample/noise.js';

const present = existsSync(join(defaultModelDir, 'model_index.json'));
const skip = present ? false : 'the embedded model (models/toy-shapes) is not there yet';

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('embedded model: 16 layers; embedding, weights and export modes agree; C* = C is a no-op; foreign edits refused', {
  skip,
  timeout: 300000,
}, async () => {
  const pipeline = await loadPipeline(undefined, { threads: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'edit-e2e-'));
  try {
    const ctx = await openEditContext(pipeline);
    assert.equal(ctx.map.layers.length, 16);
    assert.equal(ctx.map.d, pipeline.textWidth);
    const { edit } = await computeModelEdit(ctx, { pairs: [{ source: 'a circle', destination: 'a purple circle' }] });
    assert.equal(edit.steps[0].rows, 4 * 77);

    // UNet outputs for the same sample, timestep and prompts [uncond, cond].
    const E = await pipeline.encodePrompts(['', 'a circle']);
    const L = pipeline.sequenceLength;
    const d = pipeline.textWidth;
    const c = pipeline.latentChannels;
    const h = pipeline.defaultSize / pipeline.vaeScaleFactor;
    const feeds = (ehs) => ({
      sample: gaussianNoise(3, 2 * c * h * h),
      dims: [2, c, h, h],
      timestep: 500,
      encoderHiddenStates: { dims: [2, L, d], data: ehs },
    });
    const plain = await pipeline.runUnet(feeds(E));
    const viaEmbedding = await pipeline.runUnet(feeds(editedConditioning(edit, E).encoderHiddenStates));
    const weights = await prepareEditedGeneration(ctx, edit, 'weights');
    const viaWeights = await weights.pipeline.runUnet(feeds(E));
    const exportDir = join(dir, 'edited');
    await exportEditedPipeline(pipeline.dir, ctx.unet, edit, exportDir);
    assert.ok(readdirSync(exportDir).includes('edit.json'));
    const exported = await loadPipeline(exportDir, { threads: 1 });
    const viaExport = await exported.runUnet(feeds(E));
    const scale = plain.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const effect = maxAbsDiff(plain, viaWeights);
    assert.ok(effect > 1e-3 * scale, `the edit must move the UNet output (moved ${effect}, scale ${scale})`);
    assert.ok(
      maxAbsDiff(viaEmbedding, viaWeights) <= 1e-4 * scale,
      `embedding vs weights: ${maxAbsDiff(viaEmbedding, viaWeights)} (scale ${scale})`,
    );
    assert.equal(maxAbsDiff(viaExport, viaWeights), 0, 'the exported folder runs the same weights');

    // Images: embedding mode vs weights mode, two seeds, few steps. Tolerance: 2/255 per channel.
    const opts = {
      prompts: ['a circle'],
      seeds: [0, 1],
      steps: 4,
      guidance: 7.5,
      height: pipeline.defaultSize,
      width: pipeline.defaultSize,
    };
    const emb = await prepareEditedGeneration(ctx, edit, 'embedding');
    const imgE = await generate(emb.pipeline, await emb.options(opts));
    const imgW = await generate(weights.pipeline, await weights.options(opts));
    for (let i = 0; i < imgE.length; i++)
      assert.ok(maxAbsDiff(imgE[i].rgb, imgW[i].rgb) <= 2, `image ${i} differs by ${maxAbsDiff(imgE[i].rgb, imgW[i].rgb)}`);
    await weights.close();
    await exported.close();

    // C* = C: identical images to the unedited model.
    const noop = await computeModelEdit(ctx, { pairs: [{ source: 'a circle', destination: 'a circle' }] });
    assert.ok(noop.edit.steps[0].D.every((x) => x === 0));
    const g = await prepareEditedGeneration(ctx, noop.edit, 'embedding');
    const same = await generate(g.pipeline, await g.options(opts));
    const orig = await generate(pipeline, opts);
    for (let i = 0; i < same.length; i++) assert.deepEqual(same[i].rgb, orig[i].rgb);

    // An edit file for another model.
    const foreign = join(dir, 'foreign.safetensors');
    saveEdit(foreign, { ...edit, fingerprint: '0'.repeat(64) });
    await assert.rejects(prepareEditFile(pipeline, foreign), /made for a different model/);
    const mine = join(dir, 'mine.safetensors');
    saveEdit(mine, edit);
    const fromFile = await prepareEditFile(pipeline, mine);
    const imgF = await generate(fromFile.pipeline, await fromFile.options(opts));
    for (let i = 0; i < imgF.length; i++) assert.deepEqual(imgF[i].rgb, imgE[i].rgb);
  } finally {
    await pipeline.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weights mode on a UNet with external data: the temp folder is gone once the session exists, and sampling works', {
  skip,
  timeout: 120000,
}, async () => {
  // The embedded model with its UNet weights moved to an external file, as large SD exports store them.
  const dir = mkdtempSync(join(tmpdir(), 'edit-ext-'));
  for (const part of ['model_index.json', 'scheduler', 'text_encoder', 'tokenizer', 'vae_decoder'])
    cpSync(join(defaultModelDir, part), join(dir, part), { recursive: true });
  const unet = await loadModel(join(defaultModelDir, 'unet', 'model.onnx'));
  mkdirSync(join(dir, 'unet'));
  saveModel(unet.model, join(dir, 'unet', 'model.onnx'), { externalData: { location: 'weights.pb', threshold: 1024 } });
  const pipeline = await loadPipeline(dir, { threads: 1 });
  const tempFolders = () =>
    readdirSync(tmpdir())
      .filter((n) => n.startsWith('.time-edit-unet-'))
      .sort();
  const before = tempFolders();
  try {
    const ctx = await openEditContext(pipeline);
    const { edit } = await computeModelEdit(ctx, { pairs: [{ source: 'a circle', destination: 'a purple circle' }] });
    const weights = await prepareEditedGeneration(ctx, edit, 'weights');
    try {
      assert.deepEqual(tempFolders(), before, 'no .time-edit-unet-* folder is left while the edited session is open');
      const opts = { prompts: ['a circle'], seeds: [0], steps: 2, guidance: 7.5, height: 32, width: 32 };
      const emb = await prepareEditedGeneration(ctx, edit, 'embedding');
      const [a] = await generate(weights.pipeline, await weights.options(opts));
      const [b] = await generate(emb.pipeline, await emb.options(opts));
      await emb.close();
      assert.ok(maxAbsDiff(a.rgb, b.rgb) <= 2, 'weights mode (session from the removed folder) draws what embedding mode draws');
    } finally {
      await weights.close();
    }
  } finally {
    await pipeline.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

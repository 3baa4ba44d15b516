// Pipeline sessions are created on first use: `edit --batch` runs only the text encoder, so it must create no
// UNet or VAE session, while generate creates all three. The graph-read interfaces that let loadPipeline check a
// folder without sessions must be what onnxruntime itself reports (the sessions are the independent reference).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPipeline } from '../lib/model/pipeline.js';
import { graphInterface } from '../lib/model/graph-interface.js';
import { SessionHost } from '../lib/model/session-host.js';
import { generate } from '../lib/sample/generate.js';
import { openEditContext } from '../lib/edit/context.js';
import { runBatchWith } from '../lib/edit/batch.js';

const toy = new URL('../models/toy-shapes', import.meta.url).pathname;
const fixtures = new URL('./fixtures', import.meta.url).pathname;
const modelPresent = existsSync(join(toy, 'model_index.json'));

test('edit --batch through the library creates only the text encoder session', { skip: !modelPresent }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lazy-'));
  const pipeline = await loadPipeline();
  try {
    // The toy text encoder's graph only names its output width, so that one session is created at load to check it.
    assert.ok(
      pipeline.sessionsCreated().every((m) => m === 'text_encoder'),
      `loadPipeline created ${pipeline.sessionsCreated().join(', ')}`,
    );
    const file = join(dir, 'edits.jsonl');
    const lines = ['circle', 'square', 'star'].map((s) => JSON.stringify({ source: `a ${s}`, destination: `a purple ${s}` }));
    writeFileSync(file, `${lines.join('\n')}\n`);
    const ctx = await openEditContext(pipeline);
    const s = await runBatchWith(ctx, file, join(dir, 'out'));
    assert.equal(s.errors, 0);
    assert.deepEqual(pipeline.sessionsCreated(), ['text_encoder']);
  } finally {
    await pipeline.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('generate creates the three sessions, each once, and the list is a copy', { skip: !modelPresent }, async () => {
  const pipeline = await loadPipeline();
  try {
    const o = { prompts: ['a circle'], seeds: [0, 1], steps: 2, guidance: 7.5, height: 32, width: 32 };
    await Promise.all([generate(pipeline, o), generate(pipeline, o)]);
    const created = pipeline.sessionsCreated();
    assert.deepEqual([...created].sort(), ['text_encoder', 'unet', 'vae_decoder']);
    created.push('x');
    assert.equal(pipeline.sessionsCreated().length, 3);
  } finally {
    await pipeline.close();
  }
});

test('a graph-read interface equals onnxruntime session metadata', { skip: !modelPresent }, async () => {
  const folders = [
    toy,
    ...['tiny-sd', 'tiny-sd-fp16', 'tiny-sd-int64', 'tiny-sd-optimum', 'tiny-sd-external'].map((f) => join(fixtures, f)),
  ];
  const host = new SessionHost();
  let compared = 0;
  try {
    for (const folder of folders) {
      for (const model of ['text_encoder', 'unet', 'vae_decoder']) {
        const path = join(folder, model, 'model.onnx');
        if (!existsSync(path)) continue;
        const fromGraph = await graphInterface(path);
        const fromSession = await host.load(host.newKey(model), { path }, { device: 'cpu' }, model);
        if (fromGraph === null) continue; // the pipeline then asks the session itself
        assert.deepEqual(fromGraph.inputs, fromSession.inputs, path);
        // Outputs: same names and types; a dim is onnxruntime's or a name its shape inference resolved.
        assert.deepEqual(
          fromGraph.outputs.map((o) => [o.name, o.type, o.shape.length]),
          fromSession.outputs.map((o) => [o.name, o.type, o.shape.length]),
          path,
        );
        fromGraph.outputs.forEach((o, i) =>
          o.shape.forEach((d, k) => {
            if (typeof d === 'number') assert.equal(d, fromSession.outputs[i].shape[k], `${path} ${o.name} dim ${k}`);
          }),
        );
        compared++;
      }
    }
  } finally {
    await host.close();
  }
  assert.ok(compared >= 3, `only ${compared} graphs compared`);
});

test('a model over the read limit, or one that is not ONNX, is left to the session', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lazy-'));
  try {
    const junk = join(dir, 'model.onnx');
    writeFileSync(junk, 'not a model');
    assert.equal(await graphInterface(junk), null);
    if (modelPresent) assert.equal(await graphInterface(join(toy, 'unet', 'model.onnx'), 16), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

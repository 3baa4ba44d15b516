// Weights mode and V-only holding one copy of the UNet's weights (docs/memory.md, "What each edit mode costs"):
// an edit context frees the UNet file it read once its map and fingerprint are made and reads it again only when
// asked; prepareEditedGeneration frees the graph it patched before the patched session is created, which reads a
// temp file removed at once; the images are those of the patched model given to onnxruntime as bytes (the way
// weights mode ran before); a UNet file changed under an open context is refused, never silently used.
// Structure only: the memory these save is measured by `bench generate --memory` (docs/memory.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelError } from '../lib/errors.js';
import { computeModelEdit, editContextHoldsUnet, openEditContext, prepareEditedGeneration } from '../lib/edit/context.js';
import { kvTensorPlaces, patchedUnetCopy, patchUnetWeights } from '../lib/edit/apply.js';
import { findCrossAttention } from '../lib/model/cross-attention.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { encodeModel, loadModel, setTensorFloat32, tensorBytes, tensorToFloat32 } from '../lib/model/onnx/index.js';
import { releaseArrayBuffer } from '../lib/model/release-buffer.js';
import { generate } from '../lib/sample/generate.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const embedded = join(root, 'models', 'toy-shapes');
const haveEmbedded = existsSync(join(embedded, 'unet', 'model.onnx'));
const OPTIONS = { prompts: ['a circle'], seeds: [0, 3], steps: 3, guidance: 7.5, height: 32, width: 32 };
const request = (mode) => ({
  pairs: [{ source: 'a circle', destination: 'a purple circle' }],
  lambda: 0.1,
  augmentations: [],
  mode,
  preserve: [],
});

const view = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBytes = (a, b) => a !== undefined && b !== undefined && view(a).equals(view(b));

/** Waits (at most 2 s) until `done()` holds: the freeing of a detached buffer happens on a later event-loop turn. */
async function eventually(done) {
  for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  return done();
}

test('releaseArrayBuffer detaches the buffer and gives its memory back', async () => {
  const before = process.memoryUsage().arrayBuffers;
  const big = new Uint8Array(64 * 1024 * 1024).fill(7);
  const view = big.subarray(10, 20);
  assert.ok(process.memoryUsage().arrayBuffers >= before + big.byteLength);
  releaseArrayBuffer(big.buffer);
  assert.equal(big.byteLength, 0);
  assert.equal(view.length, 0, 'views of a released buffer are empty: a stale use cannot read old weights');
  assert.ok(await eventually(() => process.memoryUsage().arrayBuffers < before + big.byteLength / 2 + 16e6), 'the 64 MiB were freed');
  releaseArrayBuffer(big.buffer); // already detached: nothing happens
  releaseArrayBuffer(new SharedArrayBuffer(8));
});

test('an edit context holds its UNet graph only while asked for; ctx.unet reads the same graph again', {
  skip: !haveEmbedded,
}, async () => {
  const p = await loadPipeline(undefined, { threads: 2 });
  try {
    const ctx = await openEditContext(p);
    assert.equal(editContextHoldsUnet(ctx), false, 'openEditContext frees the file it read');
    const direct = await loadModel(p.unetPath);
    const again = ctx.unet;
    assert.equal(editContextHoldsUnet(ctx), true);
    assert.equal(ctx.unet, again, 'kept until the next prepareEditedGeneration');
    assert.deepEqual(
      again.model.graph.initializer.map((t) => t.name),
      direct.model.graph.initializer.map((t) => t.name),
    );
    assert.deepEqual(again.bytes, direct.bytes);
    const { edit } = await computeModelEdit(ctx, request('kv'));
    const g = await prepareEditedGeneration(ctx, edit, 'weights');
    await g.close();
    assert.equal(editContextHoldsUnet(ctx), false, 'prepareEditedGeneration stops holding it');
    assert.equal(again.bytes.length, direct.bytes.length, 'a copy a caller took is dropped by the context, not emptied');
  } finally {
    await p.close();
  }
});

test('weights mode (K+V and V only): the graph is freed, the temp file removed, the images those of the patched bytes', {
  skip: !haveEmbedded,
}, async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'weights-mode-memory-'));
  const savedTmp = process.env.TMPDIR;
  const p = await loadPipeline(undefined, { threads: 2 });
  try {
    const ctx = await openEditContext(p);
    for (const mode of ['kv', 'v']) {
      const { edit } = await computeModelEdit(ctx, request(mode));
      // The reference: the patched model handed to onnxruntime as bytes, from a read of its own.
      const patched = await patchUnetWeights(await loadModel(p.unetPath), ctx.map, edit);
      const viaBytes = await p.withUnet({ modelBytes: encodeModel(patched) });
      let want;
      try {
        want = await generate(viaBytes, OPTIONS);
      } finally {
        await viaBytes.close();
      }
      process.env.TMPDIR = tmp; // os.tmpdir() reads it: the temp file the session reads is written here
      let g;
      try {
        g = await prepareEditedGeneration(ctx, edit, 'weights');
      } finally {
        if (savedTmp === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = savedTmp;
      }
      try {
        assert.deepEqual(readdirSync(tmp), [], `${mode}: the temp file is removed once the session has read it`);
        assert.equal(editContextHoldsUnet(ctx), false);
        assert.equal(g.pipeline.unetPath, p.unetPath, 'the copy names the folder UNet, not the removed temp file');
        const live = p.host.liveSessions().filter((k) => k.startsWith('unet'));
        assert.equal(live.length, 1, `${mode}: one UNet session (${live.join(', ')})`);
        const got = await generate(g.pipeline, await g.options(OPTIONS));
        assert.equal(got.length, want.length);
        for (const [i, img] of got.entries()) assert.deepEqual(img.rgb, want[i].rgb, `${mode}: image ${i} differs from the bytes route`);
      } finally {
        await g.close();
      }
    }
  } finally {
    await p.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a UNet file changed under an open edit context is refused when read again', { skip: !haveEmbedded }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weights-mode-changed-'));
  try {
    cpSync(embedded, join(dir, 'model'), { recursive: true });
    const p = await loadPipeline(join(dir, 'model'), { threads: 2 });
    try {
      const ctx = await openEditContext(p);
      const { edit } = await computeModelEdit(ctx, request('kv'));
      const later = new Date(Date.now() + 60_000);
      utimesSync(p.unetPath, later, later);
      assert.throws(
        () => ctx.unet,
        (err) => err instanceof ModelError && /changed since the edit context was opened/.test(err.message),
      );
      await assert.rejects(prepareEditedGeneration(ctx, edit, 'weights'), /changed since the edit context was opened/);
    } finally {
      await p.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('patchedUnetCopy: the file patched in place holds the tensors patchUnetWeights gives (float32 and float16)', {
  skip: !haveEmbedded,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weights-mode-copy-'));
  const p = await loadPipeline(undefined, { threads: 2 });
  try {
    const ctx = await openEditContext(p);
    const edits = [(await computeModelEdit(ctx, request('kv'))).edit, (await computeModelEdit(ctx, request('v'))).edit];
    // A float16 variant of the UNet file (its K/V weights stored as float16): enough to compare bytes, not to run.
    const half = await loadModel(p.unetPath);
    const halfMap = findCrossAttention(half.model.graph);
    const kv = new Set(halfMap.layers.flatMap((l) => [l.k.initializer, l.v.initializer]));
    for (const t of half.model.graph.initializer)
      if (kv.has(t.name)) {
        const v = tensorToFloat32(t);
        t.dataType = 10;
        setTensorFloat32(t, v);
      }
    writeFileSync(join(dir, 'half.onnx'), encodeModel(half.model));
    for (const path of [p.unetPath, join(dir, 'half.onnx')])
      for (const edit of edits) {
        const unet = await loadModel(path);
        const map = findCrossAttention(unet.model.graph);
        const places = kvTensorPlaces(unet, map);
        assert.equal(places?.length, 2 * map.layers.length, 'a self-contained file: every K/V weight has its place');
        const want = new Map((await patchUnetWeights(unet, map, edit)).graph.initializer.map((t) => [t.name, tensorBytes(t)]));
        const copy = await patchedUnetCopy(path, places, map, edit);
        try {
          const got = await loadModel(copy.path);
          assert.equal(got.bytes.length, unet.bytes.length);
          assert.equal(got.model.graph.node.length, unet.model.graph.node.length);
          let changed = 0;
          for (const t of got.model.graph.initializer) {
            assert.ok(sameBytes(tensorBytes(t), want.get(t.name)), `${path}: ${t.name} differs from patchUnetWeights'`);
            if (kv.has(t.name) && !tensorBytes(t).every((b, i) => b === unet.bytes[places.find((q) => q.shell.name === t.name).offset + i]))
              changed++;
          }
          assert.ok(changed >= map.layers.length, `${changed} K/V weights changed`);
        } finally {
          copy.cleanup();
        }
        assert.equal(existsSync(copy.path), false);
      }
  } finally {
    await p.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

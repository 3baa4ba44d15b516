// CLIP judge: preprocessing and feeding checked against PyTorch on a tiny CLIP-shaped export (fixture made by
// test/fixtures/make_tiny_clip.py), the decision rule of each category, and a clear error for a bad folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipJudge, preprocessClip } from '../lib/eval/clip-judge.js';

const dir = new URL('./fixtures/tiny-clip', import.meta.url).pathname;
const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));

function testImage() {
  const { width: w, height: h } = expected.image;
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rgb.set([(x * 6) % 256, (y * 8) % 256, ((x + y) * 3) % 256], (y * w + x) * 3);
  return { width: w, height: h, rgb };
}

// A minimal CLIP vocabulary: only the special tokens and the words the test uses.
function tokenizerDir() {
  const t = mkdtempSync(join(tmpdir(), 'clip-tok-'));
  writeFileSync(
    join(t, 'vocab.json'),
    JSON.stringify({ '<|startoftext|>': 49406, '<|endoftext|>': 49407, 'a</w>': 320, 'dog</w>': 1746, b: 65, c: 66 }),
  );
  writeFileSync(join(t, 'merges.txt'), '#version: 0.2\n');
  return t;
}

test('preprocessing matches PyTorch (bilinear resize of the shortest side, centre crop, CLIP normalisation)', () => {
  const px = preprocessClip(testImage());
  assert.equal(px.length, 3 * 224 * 224);
  const at = (c, y, x) => px[c * 224 * 224 + y * 224 + x];
  const samples = [
    [0, 0, 0],
    [1, 100, 37],
    [2, 223, 223],
    [0, 111, 150],
  ];
  samples.forEach(([c, y, x], i) =>
    assert.ok(
      Math.abs(at(c, y, x) - expected.pixel_sample[i]) < 1e-5,
      `pixel ${c},${y},${x}: ${at(c, y, x)} vs ${expected.pixel_sample[i]}`,
    ),
  );
});

test("logits equal PyTorch's for the same image and token ids; the category rules follow the protocol", async () => {
  const tok = tokenizerDir();
  try {
    const judge = await ClipJudge.load(dir, tok);
    const logits = await judge.logitsForIds(testImage(), expected.ids);
    assert.ok(
      Math.abs(logits[0] - expected.logits[0]) < 1e-4 && Math.abs(logits[1] - expected.logits[1]) < 1e-4,
      `${[...logits]} vs ${expected.logits}`,
    );
    // Text goes through the tokenizer with SD/CLIP padding: "a" → [bos, 320, eos, eos…].
    const viaText = await judge.logits(testImage(), ['a']);
    const viaIds = await judge.logitsForIds(testImage(), [[49406, 320, ...new Array(75).fill(49407)]]);
    assert.equal(viaText[0], viaIds[0]);
    // With these weights the image prefers text 2 over text 1 (reference logits), so efficacy/generality
    // (target wins) succeed when the target is text 2, and specificity (test wins) fails.
    assert.ok(expected.logits[1] > expected.logits[0]);
    const [t1, t2] = [expected.ids[0], expected.ids[1]];
    const pair = await judge.logitsForIds(testImage(), [t1, t2]);
    assert.ok(pair[1] > pair[0]);
    // Decision rule per category, with the logits fixed to "the second text (target) wins".
    judge.logits = async () => Float32Array.from([1, 2]);
    assert.equal(await judge.success(testImage(), 'efficacy', 'old', 'new'), true);
    assert.equal(await judge.success(testImage(), 'generality', 'positive', 'gt'), true);
    assert.equal(await judge.success(testImage(), 'specificity', 'negative', 'gn'), false);
    judge.logits = async () => Float32Array.from([3, 2]);
    assert.equal(await judge.success(testImage(), 'efficacy', 'old', 'new'), false);
    assert.equal(await judge.success(testImage(), 'specificity', 'negative', 'gn'), true);
    await judge.close();
  } finally {
    rmSync(tok, { recursive: true, force: true });
  }
});

test('a folder without model.onnx is a clear error', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'clip-empty-'));
  try {
    await assert.rejects(ClipJudge.load(empty), /has no model\.onnx/);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

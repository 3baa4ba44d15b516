// makeGrid's whole-number enlargement (what `edit` uses to make the embedded model's 32×32 images visible):
// sampling every k-th pixel of a k× grid must give the 1× grid back byte for byte, and each k × k block must hold one
// colour. The 1× reference is built here from the grid rule (row-major cells, gaps of one colour), not by makeGrid.
// Last, `edit` itself: its default grid of the embedded model is that enlargement (4×) of its `--grid-scale 1` grid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeGrid, scaleToAtLeast } from '../lib/image/grid.js';
import { decodePng } from '../lib/image/png.js';

const cli = fileURLToPath(new URL('../lib/cli.js', import.meta.url));

/** Seeded pseudo-random image, so every pixel differs from its neighbours and a shifted copy cannot pass. */
function noiseImage(width, height, seed) {
  const rgb = new Uint8Array(width * height * 3);
  let s = seed >>> 0;
  for (let i = 0; i < rgb.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    rgb[i] = s >>> 24;
  }
  return { width, height, rgb };
}

/** The 1× grid, pixel by pixel: which cell (or gap) each output pixel falls in. */
function referenceGrid(images, columns, gap, background) {
  const { width: w, height: h } = images[0];
  const cols = Math.min(columns, images.length);
  const rows = Math.ceil(images.length / cols);
  const W = cols * w + (cols - 1) * gap;
  const H = rows * h + (rows - 1) * gap;
  const rgb = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const cx = Math.floor(x / (w + gap)),
        ix = x % (w + gap);
      const cy = Math.floor(y / (h + gap)),
        iy = y % (h + gap);
      const k = cy * cols + cx;
      const inCell = ix < w && iy < h && k < images.length;
      for (let c = 0; c < 3; c++) rgb[(y * W + x) * 3 + c] = inCell ? images[k].rgb[(iy * w + ix) * 3 + c] : background[c];
    }
  return { width: W, height: H, rgb };
}

/** Every `k`-th pixel, starting at offset (`dx`, `dy`) inside each k × k block. */
function sample(img, k, dx = 0, dy = 0) {
  const width = img.width / k,
    height = img.height / k;
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) rgb[(y * width + x) * 3 + c] = img.rgb[((y * k + dy) * img.width + x * k + dx) * 3 + c];
  return { width, height, rgb };
}

test('grid at 1×: equals the independent reference (default gap 2, white)', () => {
  const images = Array.from({ length: 16 }, (_, i) => noiseImage(32, 32, i + 1));
  const grid = makeGrid(images, 8);
  const ref = referenceGrid(images, 8, 2, [255, 255, 255]);
  assert.equal(grid.width, 8 * 32 + 7 * 2);
  assert.equal(grid.height, 2 * 32 + 2);
  assert.deepEqual(grid, ref);
  // The options form and the positional form are the same grid.
  assert.deepEqual(makeGrid(images, 8, { gap: 2, background: [255, 255, 255], scale: 1 }), ref);
});

test('grid enlarged k×: every k-th pixel is the 1× grid, each k × k block is one colour', () => {
  // 16 images of 32×32 in 8 columns is what `edit --seeds 0-7` draws; the ragged case checks empty cells too.
  for (const [count, columns, size, gap, background] of [
    [16, 8, 32, 2, [255, 255, 255]],
    [5, 3, 7, 1, [9, 200, 40]],
    [3, 2, 4, 0, [0, 0, 0]],
  ]) {
    const images = Array.from({ length: count }, (_, i) => noiseImage(size, size + 1, 100 * count + i));
    const ref = referenceGrid(images, columns, gap, background);
    for (const k of [2, 3, 4]) {
      const big = makeGrid(images, columns, { gap, background, scale: k });
      assert.equal(big.width, ref.width * k, `width at ${k}×`);
      assert.equal(big.height, ref.height * k, `height at ${k}×`);
      assert.equal(big.rgb.length, big.width * big.height * 3);
      assert.ok(Buffer.from(sample(big, k).rgb).equals(Buffer.from(ref.rgb)), `every ${k}-th pixel equals the 1× grid (${count} images)`);
      // Nearest neighbour: any offset inside the block samples the same image (no blending with neighbours).
      assert.ok(Buffer.from(sample(big, k, k - 1, k - 1).rgb).equals(Buffer.from(ref.rgb)), `last pixel of each ${k}×${k} block`);
      assert.ok(Buffer.from(sample(big, k, 1, 0).rgb).equals(Buffer.from(ref.rgb)), `second column of each ${k}×${k} block`);
    }
  }
});

test('grid scale: checked, and the automatic factor makes cells at least the minimum', () => {
  const images = [noiseImage(2, 2, 1)];
  for (const bad of [0, -1, 1.5, Number.NaN]) assert.throws(() => makeGrid(images, 1, { scale: bad }), /scale must be a positive integer/);
  assert.throws(() => makeGrid(images, 1, { gap: -1 }), /gap must be a non-negative integer/);
  assert.equal(scaleToAtLeast(32, 128), 4);
  assert.equal(scaleToAtLeast(33, 128), 4);
  assert.equal(scaleToAtLeast(64, 128), 2);
  assert.equal(scaleToAtLeast(96, 128), 2);
  assert.equal(scaleToAtLeast(128, 128), 1);
  assert.equal(scaleToAtLeast(512, 128), 1);
  assert.throws(() => scaleToAtLeast(0, 128), RangeError);
});

test("edit draws the embedded model's before/after grid 4× (every 4th pixel = --grid-scale 1), refuses a bad --grid-scale", () => {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-grid-'));
  try {
    const edit = (out, ...extra) => {
      const r = spawnSync(
        process.execPath,
        [
          cli,
          'edit',
          '--source',
          'a circle',
          '--dest',
          'a purple circle',
          '--seeds',
          '0-1',
          '--steps',
          '2',
          '--out',
          join(dir, out),
          ...extra,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      return decodePng(readFileSync(join(dir, out, 'before-after.png')));
    };
    const native = edit('native', '--grid-scale', '1');
    const big = edit('default');
    // 2 seeds of 32×32 with a 2 px gap, two rows (before, after).
    assert.deepEqual([native.width, native.height], [66, 66]);
    assert.deepEqual([big.width, big.height], [4 * 66, 4 * 66]);
    assert.ok(Buffer.from(sample(big, 4).rgb).equals(Buffer.from(native.rgb)));
    assert.ok(Buffer.from(sample(big, 4, 3, 2).rgb).equals(Buffer.from(native.rgb)));
    for (const bad of ['0', '1.5', 'x']) {
      const r = spawnSync(
        process.execPath,
        [cli, 'edit', '--source', 'a circle', '--dest', 'a purple circle', '--grid-scale', bad, '--out', join(dir, 'bad')],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 2, `--grid-scale ${bad}: ${r.stderr}`);
      assert.match(r.stderr, /--grid-scale/);
    }
    const batch = spawnSync(process.execPath, [cli, 'edit', '--batch', 'x.jsonl', '--grid-scale', '2', '--out', join(dir, 'batch')], {
      encoding: 'utf8',
    });
    assert.equal(batch.status, 2);
    assert.match(batch.stderr, /--grid-scale cannot be combined with --batch/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

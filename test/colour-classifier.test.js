import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  hsv,
  classifyColour,
  classifyColourDetailed,
  colourNamedIn,
  TOY_COLOURS,
  TOY_DEFAULT_COLOUR,
} from '../lib/eval/colour-classifier.js';

// A small deterministic PRNG (mulberry32) so the rendered test set is fixed.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function insidePolygon(x, y, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [x1, y1] = poly[j];
    const [x2, y2] = poly[i];
    if (y1 > y !== y2 > y && x < x1 + ((y - y1) * (x2 - x1)) / (y2 - y1)) inside = !inside;
  }
  return inside;
}

function polygon(n, r, phase, inner) {
  const pts = [];
  const k = inner ? 2 * n : n;
  for (let i = 0; i < k; i++) {
    const a = phase + (i * 2 * Math.PI) / k;
    const rr = inner && i % 2 === 1 ? r * inner : r;
    pts.push([rr * Math.cos(a), rr * Math.sin(a)]);
  }
  return pts;
}

// Independent renderer of the toy world (4x supersampled coverage, like world.py): shape on grey 236.
function render(shape, rgb, cx, cy, r, size = 32) {
  const img = new Uint8Array(size * size * 3);
  const tri = polygon(3, r * 1.1, -Math.PI / 2).map(([x, y]) => [x, y + r * 1.1 * 0.25]);
  const star = polygon(5, r * 1.15, -Math.PI / 2, 0.45);
  const inside = (dx, dy) => {
    if (shape === 'circle') return dx * dx + dy * dy <= r * r;
    if (shape === 'square') return Math.abs(dx) <= r * 0.8 && Math.abs(dy) <= r * 0.8;
    if (shape === 'triangle') return insidePolygon(dx, dy, tri);
    return insidePolygon(dx, dy, star);
  };
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let cov = 0;
      for (let sy = 0; sy < 4; sy++) {
        for (let sx = 0; sx < 4; sx++) if (inside(x + (sx + 0.5) / 4 - cx, y + (sy + 0.5) / 4 - cy)) cov++;
      }
      const a = cov / 16;
      for (let c = 0; c < 3; c++) img[(y * size + x) * 3 + c] = Math.round(236 * (1 - a) + rgb[c] * a);
    }
  }
  return img;
}

test('hsv matches hand-computed hues', () => {
  assert.deepEqual(hsv(255, 0, 0), { hue: 0, saturation: 1, value: 1 });
  assert.deepEqual(hsv(255, 255, 0), { hue: 60, saturation: 1, value: 1 });
  assert.deepEqual(hsv(0, 255, 0), { hue: 120, saturation: 1, value: 1 });
  assert.deepEqual(hsv(0, 0, 255), { hue: 240, saturation: 1, value: 1 });
  // Magenta-ish red with g < b: the floored modulo must give 300 + ..., not a negative hue.
  assert.ok(Math.abs(hsv(255, 0, 51).hue - 348) < 1e-9);
  const grey = hsv(236, 236, 236);
  assert.equal(grey.saturation, 0);
  assert.equal(grey.hue, 0);
  // orange (245,125,20): max R, min B, hue = 60 * (125-20)/(245-20) = 28
  assert.ok(Math.abs(hsv(245, 125, 20).hue - 28) < 1e-9);
});

test('rendered ground-truth images: accuracy >= 99% (clean and with +-15 noise)', () => {
  const rand = rng(12345);
  const shapes = ['circle', 'square', 'triangle', 'star'];
  let total = 0;
  let right = 0;
  let rightNoisy = 0;
  for (let i = 0; i < 600; i++) {
    const shape = shapes[Math.floor(rand() * 4)];
    const col = TOY_COLOURS[Math.floor(rand() * TOY_COLOURS.length)];
    const r = rand() < 0.5 ? 6 : 10;
    const j = r === 6 ? 4 : 2.5;
    const img = render(shape, col.rgb, 16 + (rand() * 2 - 1) * j, 16 + (rand() * 2 - 1) * j, r);
    total++;
    if (classifyColour(img, 32, 32) === col.name) right++;
    const noisy = img.map((v) => Math.max(0, Math.min(255, Math.round(v + (rand() * 2 - 1) * 15))));
    if (classifyColour(noisy, 32, 32) === col.name) rightNoisy++;
  }
  assert.ok(right / total >= 0.99, `clean accuracy ${right / total}`);
  assert.ok(rightNoisy / total >= 0.99, `noisy accuracy ${rightNoisy / total}`);
});

test('RGBA input ignores alpha and gives the same answer', () => {
  const rgb = render('star', [140, 55, 200], 16, 16, 10);
  const rgba = new Uint8Array(32 * 32 * 4);
  for (let p = 0; p < 32 * 32; p++) {
    rgba.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
    rgba[p * 4 + 3] = p % 256;
  }
  assert.equal(classifyColour(rgb, 32, 32, 3), 'purple');
  assert.equal(classifyColour(rgba, 32, 32, 4), 'purple');
});

test('votes, background-only, majority and tie-break', () => {
  const bg = new Uint8Array(32 * 32 * 3).fill(236);
  const r = classifyColourDetailed(bg, 32, 32);
  assert.equal(r.colour, 'none');
  assert.equal(r.foregroundPixels, 0);
  // 3 red pixels and 5 blue pixels on grey: blue wins; red alone (3 < minPixels 4) would be 'none'.
  const img = new Uint8Array(bg);
  const put = (p, c) => img.set(c, p * 3);
  for (let p = 0; p < 3; p++) put(p, [220, 38, 38]);
  assert.equal(classifyColour(img, 32, 32), 'none');
  for (let p = 10; p < 15; p++) put(p, [35, 85, 225]);
  const d = classifyColourDetailed(img, 32, 32);
  assert.equal(d.colour, 'blue');
  assert.deepEqual(d.votes, [3, 0, 0, 0, 5, 0]);
  // A 4-4 tie goes to the earlier colour in TOY_COLOURS (red before blue), like numpy's argmax.
  put(3, [220, 38, 38]);
  put(14, [236, 236, 236]);
  assert.equal(classifyColour(img, 32, 32), 'red');
  // Dark pixels (value < 0.2) are not foreground even when saturated.
  const dark = new Uint8Array(bg);
  for (let p = 0; p < 50; p++) dark.set([40, 0, 0], p * 3);
  assert.equal(classifyColour(dark, 32, 32), 'none');
});

test('bad input is rejected with a clear error', () => {
  assert.throws(() => classifyColour(new Uint8Array(10), 32, 32), /expected 3072 bytes/);
  assert.throws(() => classifyColour(new Uint8Array(0), 0, 32), /positive integers/);
  assert.throws(() => classifyColour(new Uint8Array(32 * 32 * 2), 32, 32, 2), /channels must be 3 or 4/);
});

test('colourNamedIn reads TIMED ground-truth prompts; defaults are not purple/orange', () => {
  assert.equal(colourNamedIn('a drawing of a big purple circle'), 'purple');
  assert.equal(colourNamedIn('An orange square'), 'orange');
  assert.equal(colourNamedIn('a circle'), undefined);
  const defaults = new Set(Object.values(TOY_DEFAULT_COLOUR));
  assert.ok(!defaults.has('purple') && !defaults.has('orange'));
});

test('model samples (models/toy-shapes-train/samples.png) classify as the grid layout says', async () => {
  const { readFileSync } = await import('node:fs');
  const { PNG } = (await import('pngjs')).default;
  const png = PNG.sync.read(readFileSync(new URL('../models/toy-shapes-train/samples.png', import.meta.url)));
  // 12x12 cells of 64x64 (32x32 samples upscaled 2x), 2-pixel gaps. Rows 0-7: cols 0-5 the named colours,
  // cols 6-11 an unnamed prompt (the shape's default); rows 8-11: the edited source prompts (purple).
  const named = TOY_COLOURS.map((c) => c.name);
  const defaults = ['red', 'blue', 'green', 'yellow'];
  const cell = 64;
  let checked = 0;
  for (let i = 0; i < 12; i++) {
    for (let j = 0; j < 12; j++) {
      const rgb = new Uint8Array(cell * cell * 3);
      for (let y = 0; y < cell; y++) {
        for (let x = 0; x < cell; x++) {
          const o = ((2 + i * (cell + 2) + y) * png.width + 2 + j * (cell + 2) + x) * 4;
          rgb.set(png.data.subarray(o, o + 3), (y * cell + x) * 3);
        }
      }
      const expected = i >= 8 ? 'purple' : j < 6 ? named[j] : defaults[i % 4];
      assert.equal(classifyColour(rgb, cell, cell), expected, `cell ${i},${j}`);
      checked++;
    }
  }
  assert.equal(checked, 144);
});

// Seeded noise (Philox4x32-10 known answers from Random123's kat_vectors, Box-Muller recomputed here), float16
// conversion, PNG writing and grids, and the flag parsers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gaussianNoise, philox4x32 } from '../lib/sample/noise.js';
import { float16ToFloat32 as fromHalf, float32ToFloat16 as toHalf } from '../lib/model/onnx/float16.js';
import { decodePng, encodePng, readPngText, writePng } from '../lib/image/png.js';
import { makeGrid } from '../lib/image/grid.js';
import { parseSeeds, parseNumber, parsePositiveInt } from '../lib/cli/sampling-flags.js';

const hex = (a) => Array.from(a, (x) => x.toString(16).padStart(8, '0')).join(' ');

test('Philox4x32-10 known-answer vectors', () => {
  assert.equal(hex(philox4x32([0, 0, 0, 0], [0, 0])), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
  assert.equal(
    hex(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])),
    '408f276d 41c83b0e a20bc7c6 6d5451fd',
  );
  assert.equal(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    'd16cfe09 94fdcceb 5001e420 24126ea1',
  );
});

test('gaussian noise: definition, determinism, independence of length, statistics', () => {
  const z = gaussianNoise(5, 6);
  // Element 4j+k from block j of Philox(counter (j,0,0,0), key (seed, 0)).
  for (const j of [0, 1]) {
    const x = philox4x32([j, 0, 0, 0], [5, 0]);
    const u = Array.from(x, (v) => (v + 0.5) / 2 ** 32);
    const r0 = Math.sqrt(-2 * Math.log(u[0]));
    const r1 = Math.sqrt(-2 * Math.log(u[2]));
    const want = [
      r0 * Math.cos(2 * Math.PI * u[1]),
      r0 * Math.sin(2 * Math.PI * u[1]),
      r1 * Math.cos(2 * Math.PI * u[3]),
      r1 * Math.sin(2 * Math.PI * u[3]),
    ];
    for (let k = 0; k < 4 && 4 * j + k < 6; k++) assert.equal(z[4 * j + k], Math.fround(want[k]));
  }
  // High seed words go into the second key word.
  const big = gaussianNoise(2 ** 32 + 5, 4);
  const xb = philox4x32([0, 0, 0, 0], [5, 1]);
  assert.equal(big[0], Math.fround(Math.sqrt(-2 * Math.log((xb[0] + 0.5) / 2 ** 32)) * Math.cos((2 * Math.PI * (xb[1] + 0.5)) / 2 ** 32)));
  assert.deepEqual(gaussianNoise(5, 1000).subarray(0, 6), z);
  assert.deepEqual(gaussianNoise(5, 1000), gaussianNoise(5, 1000));
  assert.notDeepEqual(gaussianNoise(5, 16), gaussianNoise(6, 16));
  const n = gaussianNoise(123, 200000);
  let s = 0;
  let s2 = 0;
  for (const v of n) {
    s += v;
    s2 += v * v;
  }
  assert.ok(Math.abs(s / n.length) < 0.01, `mean ${s / n.length}`);
  assert.ok(Math.abs(s2 / n.length - 1) < 0.02, `variance ${s2 / n.length}`);
  assert.throws(() => gaussianNoise(-1, 4), /seed must be an integer/);
  assert.throws(() => gaussianNoise(1.5, 4), /seed must be an integer/);
  assert.throws(() => gaussianNoise(2 ** 53, 4), /seed must be an integer/);
});

test('float16 conversion: exact values, rounding to nearest even, subnormals, overflow', () => {
  const cases = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00],
    [1e6, 0x7c00],
    [2 ** -24, 0x0001],
    [2 ** -14, 0x0400],
    [0.1, 0x2e66],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [Infinity, 0x7c00],
  ];
  for (const [v, bits] of cases) assert.equal(toHalf(new Float32Array([v]))[0], bits, `toHalf(${v})`);
  assert.ok(Number.isNaN(fromHalf(toHalf(new Float32Array([NaN])))[0]));
  // Every finite half value survives half -> float -> half.
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = toHalf(fromHalf(all));
  for (let i = 0; i < 65536; i++) {
    const e = (i >> 10) & 0x1f;
    if (e === 0x1f && (i & 0x3ff) !== 0) continue; // NaN payloads
    assert.equal(back[i], i, `half ${i.toString(16)}`);
  }
  assert.equal(fromHalf(new Uint16Array([0x3555]))[0], 0.333251953125);
});

test('PNG: round trip, atomic write leaves no temporary files, size checks', async () => {
  const img = { width: 3, height: 2, rgb: Uint8Array.from({ length: 18 }, (_, i) => i * 14) };
  const dec = decodePng(encodePng(img));
  assert.deepEqual(dec, img);
  const dir = mkdtempSync(join(tmpdir(), 'png-'));
  await writePng(join(dir, 'a.png'), img);
  assert.deepEqual(readdirSync(dir), ['a.png']);
  assert.deepEqual(decodePng(readFileSync(join(dir, 'a.png'))), img);
  await writePng(join(dir, 'new-dir', 'b.png'), img); // a missing parent folder is created
  assert.deepEqual(readdirSync(join(dir, 'new-dir')), ['b.png']);
  await assert.rejects(writePng(join(dir, 'a.png', 'c.png'), img), /cannot create the folder .*a\.png: .*exists and is not a folder/);
  assert.deepEqual(readdirSync(dir).sort(), ['a.png', 'new-dir']);
  assert.throws(() => encodePng({ width: 2, height: 2, rgb: new Uint8Array(5) }), /expected 2×2×3/);
  // Text metadata: valid chunks (pngjs re-reads the file, checking CRCs), UTF-8 preserved, pixels unchanged.
  const withText = encodePng(img, { prompt: 'a café ☕', seed: '7' });
  assert.deepEqual(decodePng(withText), img);
  assert.deepEqual(readPngText(withText), { prompt: 'a café ☕', seed: '7' });
  assert.deepEqual(readPngText(encodePng(img)), {});
  assert.throws(() => encodePng(img, { '': 'x' }), /keyword/);
});

test('grid: row-major tiles with gaps', () => {
  const solid = (v) => ({ width: 2, height: 1, rgb: new Uint8Array(6).fill(v) });
  const g = makeGrid([solid(1), solid(2), solid(3)], 2, 1, [9, 9, 9]);
  assert.equal(g.width, 5);
  assert.equal(g.height, 3);
  const px = (x, y) => g.rgb[(y * g.width + x) * 3];
  assert.deepEqual([px(0, 0), px(1, 0), px(2, 0), px(3, 0), px(4, 0)], [1, 1, 9, 2, 2]);
  assert.deepEqual([px(0, 1), px(0, 2), px(1, 2), px(3, 2)], [9, 3, 3, 9]);
  assert.throws(() => makeGrid([], 2), /no images/);
  assert.throws(() => makeGrid([solid(1), { width: 1, height: 1, rgb: new Uint8Array(3) }], 2), /differ in size/);
});

test('flag parsers', () => {
  assert.deepEqual(parseSeeds('0-7'), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(parseSeeds('1,5,9'), [1, 5, 9]);
  assert.deepEqual(parseSeeds('0-2, 10'), [0, 1, 2, 10]);
  assert.deepEqual(parseSeeds('42'), [42]);
  for (const bad of ['abc', '', '1.5', '-3', '1,,2', '5-2', '0x10']) assert.throws(() => parseSeeds(bad), /--seeds/, bad);
  assert.equal(parsePositiveInt('50', '--steps', 1), 50);
  assert.equal(parsePositiveInt(undefined, '--steps', 7), 7);
  for (const bad of ['0', '-1', '2.5', 'ten', ''])
    assert.throws(() => parsePositiveInt(bad, '--steps', 1), /--steps must be a positive integer/, bad);
  assert.equal(parseNumber('7.5', '--guidance', 1, 0), 7.5);
  assert.throws(() => parseNumber('x', '--guidance', 1, 0), /--guidance must be a number/);
  assert.throws(() => parseNumber('-1', '--guidance', 1, 0), /--guidance must be ≥ 0/);
});

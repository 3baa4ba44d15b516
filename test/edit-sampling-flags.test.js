// `edit`'s grid sampling flags (--height, --width, --images-per-call, --scheduler): parsed and bounded as
// `generate` parses its own, refused with `edit --batch FILE`, and leaving the grid's bytes unchanged when they
// spell out the defaults. The reference images come from the library's generate(), not from the command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePng } from '../lib/image/png.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { generate } from '../lib/sample/generate.js';

const cli = new URL('../lib/cli.js', import.meta.url).pathname;
const modelPresent = existsSync(new URL('../models/toy-shapes/model_index.json', import.meta.url).pathname);
const pair = ['--source', 'a circle', '--dest', 'a purple circle'];

function run(args) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120000 });
  return { code: r.status, err: r.stderr.trim(), out: r.stdout };
}

test('edit: --height, --width, --images-per-call, --scheduler are bounded like generate, nothing written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-flags-'));
  try {
    const out = join(dir, 'out');
    const cases = [
      [['--height', '0'], /--height must be a positive integer, got '0'/],
      [['--width', 'x'], /--width must be a positive integer, got 'x'/],
      [['--height', '16385'], /--height must be at most 16384, got 16385/],
      [['--images-per-call', '1025'], /--images-per-call must be at most 1024, got 1025/],
      [['--images-per-call', '-1'], /--images-per-call/],
      [['--scheduler', 'nonsense'], /scheduler/i],
    ];
    for (const [flags, re] of cases) {
      const r = run(['edit', ...pair, ...flags, '--out', out]);
      assert.equal(r.code, 2, `${flags.join(' ')}: exit ${r.code}, ${r.err}`);
      assert.match(r.err.split('\n')[0], re);
      assert.equal(existsSync(out), false, `${flags.join(' ')} wrote ${out}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit --batch FILE refuses the grid sampling flags by name', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-flags-'));
  try {
    const file = join(dir, 'edits.jsonl');
    writeFileSync(file, `${JSON.stringify({ source: 'a circle', destination: 'a purple circle' })}\n`);
    for (const flag of ['--height', '--width', '--images-per-call', '--scheduler']) {
      const value = flag === '--scheduler' ? 'ddim' : '64';
      const r = run(['edit', '--batch', file, flag, value, '--out', join(dir, 'out')]);
      assert.equal(r.code, 2, `${flag}: exit ${r.code}, ${r.err}`);
      assert.match(r.err, new RegExp(`${flag} cannot be combined with --batch`));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit --height 64 --width 64: the grid holds 64×64 cells, the "before" row is generate() at 64×64', {
  skip: !modelPresent,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-flags-'));
  try {
    const out = join(dir, 'out');
    const steps = '4';
    const r = run(['edit', ...pair, '--height', '64', '--width', '64', '--seeds', '0-1', '--steps', steps, '--out', out]);
    assert.equal(r.code, 0, r.err);
    const grid = decodePng(readFileSync(join(out, 'before-after.png')));
    // Two columns (seeds) and two rows (before, after) of 64×64 cells, a 2 px gap, all enlarged ×2 (to ≥ 128 px).
    const scale = 2;
    assert.equal(grid.width, (2 * 64 + 2) * scale);
    assert.equal(grid.height, (2 * 64 + 2) * scale);
    const pipeline = await loadPipeline();
    try {
      const [img0, img1] = await generate(pipeline, {
        prompts: ['a circle'],
        seeds: [0, 1],
        steps: 4,
        guidance: 7.5,
        height: 64,
        width: 64,
      });
      for (const [k, img] of [img0, img1].entries()) {
        assert.equal(img.width, 64);
        const x0 = k * (64 + 2);
        let mismatches = 0;
        for (let y = 0; y < 64; y++)
          for (let x = 0; x < 64; x++)
            for (let c = 0; c < 3; c++)
              if (grid.rgb[(y * scale * grid.width + (x0 + x) * scale) * 3 + c] !== img.rgb[(y * 64 + x) * 3 + c]) mismatches++;
        assert.equal(mismatches, 0, `seed ${k}: the grid's before cell differs from generate() at 64×64`);
      }
    } finally {
      await pipeline.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit: flags spelling out the defaults give the same bytes as no flags', { skip: !modelPresent }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'edit-flags-'));
  try {
    const common = [...pair, '--seeds', '0', '--steps', '6'];
    const plain = join(dir, 'plain');
    const explicit = join(dir, 'explicit');
    const a = run(['edit', ...common, '--out', plain]);
    assert.equal(a.code, 0, a.err);
    // The embedded model's native size is 32×32; generate's default is 8 images per UNet call.
    const b = run(['edit', ...common, '--height', '32', '--width', '32', '--images-per-call', '8', '--out', explicit]);
    assert.equal(b.code, 0, b.err);
    for (const f of ['edit.safetensors', 'before-after.png'])
      assert.deepEqual(readFileSync(join(explicit, f)), readFileSync(join(plain, f)), `${f} differs`);
    const cell = decodePng(readFileSync(join(plain, 'before-after.png')));
    assert.equal(cell.width, 32 * 4, 'one 32×32 cell enlarged ×4');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

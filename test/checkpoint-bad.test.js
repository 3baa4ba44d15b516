// Checkpoints that must be refused: other model families (SD 2.x, SDXL, inpainting), missing or mis-shaped keys,
// damaged safetensors files (truncated, header length beyond the file, overlapping or out-of-range offsets,
// unknown dtypes, …) and Python pickles. Each is a CheckpointError from the library and, from the CLI, one line
// naming the problem, a non-zero exit and no output written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointError } from '../lib/checkpoint/checkpoint-error.js';
import { openCheckpoint } from '../lib/checkpoint/open-checkpoint.js';
import { checkpointFixtures } from './fixtures/checkpoint-fixtures.js';

const fx = checkpointFixtures();
const skip = fx.skip;

/** fixture → what the one-line message must say. */
const BAD = {
  'sd2.safetensors': /is an SD 2\.x checkpoint \(its cross-attention K\/V take width 1024/,
  'sd2-openclip.safetensors': /is an SD 2\.x checkpoint with an OpenCLIP text encoder \(it has cond_stage_model\.model\./,
  'sdxl.safetensors': /is an SDXL checkpoint \(it has conditioner\.embedders\.1\./,
  'inpainting.safetensors': /is an inpainting checkpoint \(its UNet takes 9 input channels/,
  'missing-kv.safetensors': /has no tensor model\.diffusion_model\.middle_block\.1\.transformer_blocks\.0\.attn2\.to_v\.weight/,
  'misshaped-kv.safetensors':
    /output_blocks\.7\.1\.transformer_blocks\.0\.attn2\.to_v\.weight has shape \[32,64\], the other K\/V weights take width 128/,
  'no-text-encoder.safetensors': /has no CLIP text encoder/,
  'lora.safetensors': /is a LoRA \(it has lora_unet_down_blocks_0_/,
  'truncated.safetensors': /is beyond the end of the file's data .*truncated/,
  'header-beyond-file.safetensors': /header length \d+ is beyond the file's \d+ bytes/,
  'tiny-file.safetensors': /has 3 bytes, fewer than the 8 of the header length/,
  'overlapping-offsets.safetensors': /overlaps another tensor's/,
  'out-of-range-offsets.safetensors': /is beyond the end of the file's data/,
  'unknown-dtype.safetensors': /has an unknown dtype "F7"/,
  'wrong-byte-length.safetensors': /holds \d+ bytes, but shape \[674,128\] of F16 needs \d+/,
  'metadata-not-string.safetensors': /metadata 'format' is number, not a string/,
  'duplicate-key.safetensors': /the key '.*' appears more than once/,
  'not-json.safetensors': /has a corrupt safetensors header/,
  'model.ckpt': /is a Python pickle .*convert it to safetensors first/,
  'pickle-renamed.safetensors': /is a Python pickle/,
  'diffusers-bin': /diffusion_pytorch_model\.bin is a Python pickle/,
};

test('every bad checkpoint is a CheckpointError naming the file and the problem', { skip }, () => {
  for (const [name, message] of Object.entries(BAD)) {
    const path = join(fx.dir, 'bad', name);
    assert.throws(
      () => openCheckpoint(path),
      (err) => err instanceof CheckpointError && message.test(err.message) && err.message.includes(name) && !err.message.includes('\n'),
      name,
    );
  }
});

test('from the CLI: one line, exit 1, nothing written', { skip }, () => {
  const out = mkdtempSync(join(tmpdir(), 'time-edit-bad-ckpt-'));
  try {
    for (const [name, message] of Object.entries(BAD)) {
      const dest = join(out, name);
      const r = spawnSync(
        process.execPath,
        [
          'lib/cli.js',
          'edit',
          '--model',
          join(fx.dir, 'bad', name),
          '--tokenizer',
          'models/toy-shapes/tokenizer',
          '--source',
          'a circle',
          '--dest',
          'a purple circle',
          '--out',
          dest,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 1, `${name}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${name}: one line, got ${r.stderr}`);
      assert.match(lines[0], /^time-edit: /);
      assert.match(lines[0], message, name);
      assert.equal(existsSync(dest), false, `${name}: no output folder`);
    }
    const tok = spawnSync(process.execPath, ['lib/cli.js', 'tokenize', '--model', join(fx.dir, 'bad', 'model.ckpt'), 'a circle'], {
      encoding: 'utf8',
    });
    assert.equal(tok.status, 1);
    assert.match(tok.stderr, /is a Python pickle/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

// Reading SD 1.x safetensors checkpoints (lib/checkpoint/): the header reader against the fixture script's files
// (F32, F16, BF16, mixed with unaligned offsets), dtype conversion checked by decoding the raw bytes by hand here,
// the key map against the table of diffusers' conversion script written out below, the layer order against the
// ONNX export of the embedded model, and the full-size SD 1.x layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { checkpointAttentionMap } from '../lib/checkpoint/attention-map.js';
import { openCheckpoint, readKvWeight, detectModelPath } from '../lib/checkpoint/open-checkpoint.js';
import { openSafetensorsFile, readTensorBytes, readTensorF32 } from '../lib/checkpoint/safetensors-file.js';
import { diffusersToLdm, kohyaModuleName, ldmToDiffusers, SD_ATTENTION_LAYERS, SD_KV_KEYS } from '../lib/checkpoint/sd-keys.js';
import { findCrossAttention } from '../lib/model/cross-attention.js';
import { loadModel, tensorToFloat32 } from '../lib/model/onnx/index.js';
import { checkpointFixtures } from './fixtures/checkpoint-fixtures.js';

const fx = checkpointFixtures();
const skip = fx.skip;
const tiny = (name) => join(fx.dir, 'tiny', name);

/** float16 bits → number, from IEEE 754 binary16 (sign, 5-bit exponent biased 15, 10-bit fraction). */
function halfToNumber(h) {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 31;
  const f = h & 1023;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f === 0 ? s * Infinity : NaN;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

// diffusers scripts/convert_diffusers_to_original_stable_diffusion.py unet_conversion_map_layer, written out.
const TABLE = [
  ['input_blocks.1.1', 'down_blocks.0.attentions.0', 320],
  ['input_blocks.2.1', 'down_blocks.0.attentions.1', 320],
  ['input_blocks.4.1', 'down_blocks.1.attentions.0', 640],
  ['input_blocks.5.1', 'down_blocks.1.attentions.1', 640],
  ['input_blocks.7.1', 'down_blocks.2.attentions.0', 1280],
  ['input_blocks.8.1', 'down_blocks.2.attentions.1', 1280],
  ['middle_block.1', 'mid_block.attentions.0', 1280],
  ['output_blocks.3.1', 'up_blocks.1.attentions.0', 1280],
  ['output_blocks.4.1', 'up_blocks.1.attentions.1', 1280],
  ['output_blocks.5.1', 'up_blocks.1.attentions.2', 1280],
  ['output_blocks.6.1', 'up_blocks.2.attentions.0', 640],
  ['output_blocks.7.1', 'up_blocks.2.attentions.1', 640],
  ['output_blocks.8.1', 'up_blocks.2.attentions.2', 640],
  ['output_blocks.9.1', 'up_blocks.3.attentions.0', 320],
  ['output_blocks.10.1', 'up_blocks.3.attentions.1', 320],
  ['output_blocks.11.1', 'up_blocks.3.attentions.2', 320],
];

test('the 32 K/V keys in both layouts and as kohya module names, in graph order', () => {
  assert.deepEqual(
    SD_ATTENTION_LAYERS.map((l) => [l.ldm, l.diffusers, l.width]),
    TABLE,
  );
  assert.equal(SD_KV_KEYS.length, 32);
  assert.equal(SD_KV_KEYS[0].singleFile, 'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight');
  assert.equal(SD_KV_KEYS[0].diffusers, 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight');
  assert.equal(SD_KV_KEYS[0].kohya, 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k');
  assert.equal(SD_KV_KEYS[13].singleFile, 'model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight');
  assert.equal(kohyaModuleName(SD_ATTENTION_LAYERS[6], 'v'), 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v');
  assert.equal(SD_KV_KEYS[31].kohya, 'lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v');
  for (const k of SD_KV_KEYS) {
    assert.equal(ldmToDiffusers(k.singleFile), k.diffusers);
    assert.equal(diffusersToLdm(k.diffusers), k.singleFile);
  }
  // output_blocks.2.1 is an upsampler, not attention: it maps to nothing.
  assert.equal(ldmToDiffusers('model.diffusion_model.output_blocks.2.1.conv.weight'), undefined);
  // 2·768·(5·320 + 5·640 + 6·1280) parameters (docs/checkpoints.md).
  assert.equal(
    SD_ATTENTION_LAYERS.reduce((s, l) => s + 2 * 768 * l.width, 0),
    19_169_280,
  );
});

test('header only at open; F16 and BF16 tensors decode as their bits say; unaligned offsets read', { skip }, () => {
  const f32 = openSafetensorsFile(tiny('f32.safetensors'));
  const f16 = openSafetensorsFile(tiny('f16.safetensors'));
  const bf16 = openSafetensorsFile(tiny('bf16.safetensors'));
  const mixed = openSafetensorsFile(tiny('mixed.safetensors'));
  assert.equal(f32.metadata.format, 'pt');
  assert.equal(f32.dataStart, 8 + f32.headerLength);
  const key = SD_KV_KEYS[4].singleFile;
  assert.equal(f16.tensors.get(key).dtype, 'F16');
  const raw16 = readTensorBytes(f16, key);
  const got16 = readTensorF32(f16, key);
  const exact = readTensorF32(f32, key);
  for (let i = 0; i < got16.length; i++) {
    assert.equal(got16[i], halfToNumber(raw16[2 * i] | (raw16[2 * i + 1] << 8)));
    assert.ok(Math.abs(got16[i] - exact[i]) <= Math.abs(exact[i]) * 2 ** -11 + 2 ** -25, `F16 value ${i} is the rounded F32 value`);
  }
  const raw = readTensorBytes(bf16, key);
  const gotb = readTensorF32(bf16, key);
  const view = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < gotb.length; i++) {
    // BF16 is the high half of a float32 (big-endian DataView: bytes 0–1 are the high half).
    view.setUint16(0, raw[2 * i] | (raw[2 * i + 1] << 8));
    view.setUint16(2, 0);
    assert.equal(gotb[i], view.getFloat32(0));
    assert.ok(Math.abs(gotb[i] - exact[i]) <= Math.abs(exact[i]) * 2 ** -8);
  }
  // mixed.safetensors starts with a 3-byte tensor: the F32 K weights after it sit at odd offsets.
  const k = SD_KV_KEYS[0].singleFile;
  const e = mixed.tensors.get(k);
  assert.equal(e.dtype, 'F32');
  assert.notEqual((mixed.dataStart + e.begin) % 4, 0, 'the fixture is unaligned');
  assert.deepEqual(readTensorF32(mixed, k), readTensorF32(f32, k));
});

test('openCheckpoint finds the 32 K/V and the text encoder in every layout and dtype', { skip }, () => {
  for (const name of ['f32.safetensors', 'f16.safetensors', 'bf16.safetensors', 'mixed.safetensors', 'legacy.safetensors', 'diffusers']) {
    const c = openCheckpoint(tiny(name));
    assert.equal(c.kind, name === 'diffusers' ? 'diffusers' : 'single-file', name);
    assert.equal(c.kv.length, 32);
    assert.equal(c.d, 128);
    assert.deepEqual(
      c.kv.map((t) => t.shape[0]),
      // down 0, 1, 2 (2 layers × K, V each), mid (1 layer), up 1, 2, 3 (3 layers each)
      [...Array(4).fill(16), ...Array(4).fill(32), ...Array(4 + 2 + 6).fill(64), ...Array(6).fill(32), ...Array(6).fill(16)],
    );
    assert.deepEqual(c.textEncoder.config, {
      vocabSize: 673,
      width: 128,
      layers: 2,
      heads: 2,
      mlpWidth: 256,
      positions: 77,
      layerNormEps: 1e-5,
    });
    assert.equal(
      c.textEncoder.prefix,
      {
        legacy: 'cond_stage_model.transformer.',
        diffusers: '',
      }[name.split('.')[0]] ?? 'cond_stage_model.transformer.text_model.',
    );
    assert.equal(c.tokenizerDir === undefined, name !== 'diffusers');
  }
  // The diffusers folder's UNet is its fp16 variant; values equal the f16 single file's.
  const dif = openCheckpoint(tiny('diffusers'));
  const single = openCheckpoint(tiny('f16.safetensors'));
  assert.match(dif.kv[0].file.path, /diffusion_pytorch_model\.fp16\.safetensors$/);
  assert.deepEqual(readKvWeight(dif.kv[9]), readKvWeight(single.kv[9]));
  assert.equal(detectModelPath(tiny('diffusers')), 'diffusers');
  assert.equal(detectModelPath(tiny('f32.safetensors')), 'single-file');
  assert.equal(detectModelPath('models/toy-shapes'), 'onnx-folder');
});

test("the checkpoint's layers are the ONNX export's, in the same order, with the same weights", { skip }, async () => {
  // The embedded model without its text-state lift (a CLIP checkpoint cannot hold it): make-checkpoints.py unlift.
  const unet = await loadModel(join(fx.dir, 'toy', 'toy-shapes-base', 'unet', 'model.onnx'));
  const onnxMap = findCrossAttention(unet.model.graph);
  const inits = new Map(unet.model.graph.initializer.map((t) => [t.name, t]));
  for (const path of ['toy/toy-shapes.safetensors', 'toy/toy-diffusers']) {
    const c = openCheckpoint(join(fx.dir, path));
    const map = checkpointAttentionMap(c);
    assert.deepEqual(
      map.layers.map((l) => [l.name, l.width]),
      onnxMap.layers.map((l) => [l.name, l.width]),
    );
    assert.equal(map.d, onnxMap.d);
    assert.equal(map.totalRows, onnxMap.totalRows);
    onnxMap.layers.forEach((l, i) => {
      for (const kind of ['k', 'v']) {
        const w = tensorToFloat32(inits.get(l[kind].initializer), unet.dir); // [d, C]
        const t = readKvWeight(c.kv[2 * i + (kind === 'k' ? 0 : 1)]); // [C, d]
        const C = l.width;
        const d = onnxMap.d;
        for (let r = 0; r < C; r += 7) for (let j = 0; j < d; j += 5) assert.equal(t[r * d + j], w[j * C + r]);
      }
    });
  }
});

test('the full-size SD 1.x layout: CLIP ViT-L/14 text encoder and [C, 768] K/V', { skip }, () => {
  const c = openCheckpoint(join(fx.dir, 'full', 'sd15-layout.safetensors'));
  assert.deepEqual(c.textEncoder.config, {
    vocabSize: 49408,
    width: 768,
    layers: 12,
    heads: 12,
    mlpWidth: 3072,
    positions: 77,
    layerNormEps: 1e-5,
  });
  assert.equal(c.d, 768);
  assert.deepEqual(
    c.kv.map((t) => t.shape),
    SD_KV_KEYS.map((k) => [k.layer.width, 768]),
  );
  // The text encoder holds 123 M parameters (≈ 0.49 GB in fp32), the K/V 19.2 M.
  const params = c.textEncoder.names.reduce(
    (s, n) => s + c.textEncoder.file.tensors.get(c.textEncoder.key(n)).shape.reduce((a, b) => a * b, 1),
    0,
  );
  assert.equal(params, 123_060_480);
  assert.equal(
    c.kv.reduce((s, t) => s + t.shape[0] * t.shape[1], 0),
    19_169_280,
  );
});

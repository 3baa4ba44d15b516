// --save-checkpoint and --save-model on tiny SD 1.x-layout checkpoints written here (every key of the 32 K/V
// weights and of a one-layer CLIP text encoder, other tensors of every dtype at unaligned offsets, K/V in F32,
// F16 and BF16): every tensor but the 32 stays byte for byte, the 32 equal W·M from a float64 reference written
// here (rounded to their dtype), the header parses with Python's own json/struct, the copy is streamed in small
// chunks, a source that changes while it is copied leaves nothing behind, and a diffusers folder changes only unet/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint } from '../lib/checkpoint/open-checkpoint.js';
import { writeMergedCheckpoint, float32ToBytes } from '../lib/edit/merged-checkpoint.js';
import { writeEditedDiffusersFolder } from '../lib/edit/diffusers-folder.js';

function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

const D_TEXT = 16;
const LDM = [
  ...[1, 2, 4, 5, 7, 8].map((i) => `input_blocks.${i}.1`),
  'middle_block.1',
  ...[3, 4, 5, 6, 7, 8, 9, 10, 11].map((i) => `output_blocks.${i}.1`),
];
const DIFFUSERS = [
  ...[0, 1, 2].flatMap((i) => [0, 1].map((j) => `down_blocks.${i}.attentions.${j}`)),
  'mid_block.attentions.0',
  ...[1, 2, 3].flatMap((i) => [0, 1, 2].map((j) => `up_blocks.${i}.attentions.${j}`)),
];
const WIDTH = [8, 8, 16, 16, 32, 32, 32, 32, 32, 32, 16, 16, 16, 8, 8, 8];
const KV_DTYPES = ['F32', 'F16', 'BF16'];
const BYTES = { F32: 4, F16: 2, BF16: 2, I64: 8, U8: 1 };

function decode(raw, dtype) {
  const n = raw.length / BYTES[dtype];
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') out[i] = raw.readFloatLE(4 * i);
    else if (dtype === 'BF16') {
      const b = Buffer.alloc(4);
      b.writeUInt32LE((raw.readUInt16LE(2 * i) << 16) >>> 0);
      out[i] = b.readFloatLE(0);
    } else {
      const h = raw.readUInt16LE(2 * i);
      const e = (h >> 10) & 31;
      const m = h & 1023;
      const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? Number.NaN : Number.POSITIVE_INFINITY) : (1 + m / 1024) * 2 ** (e - 15);
      out[i] = h & 0x8000 ? -v : v;
    }
  }
  return out;
}

/** A safetensors file from [name, dtype, shape, bytes] in this order (so offsets follow the list), by hand. */
function writeSafetensors(path, tensors, metadata) {
  const header = metadata ? { __metadata__: metadata } : {};
  let at = 0;
  for (const [name, dtype, shape, bytes] of tensors) {
    header[name] = { dtype, shape, data_offsets: [at, at + bytes.length] };
    at += bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...tensors.map((t) => t[3])]));
}

function randomBytes(r, dtype, count) {
  if (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16')
    return Buffer.from(
      float32ToBytes(
        Float32Array.from({ length: count }, () => r() * 0.5),
        dtype,
      ),
    );
  return Buffer.from(Uint8Array.from({ length: count * BYTES[dtype] }, () => Math.floor((r() + 1) * 127)));
}

/** Tensors of a tiny SD 1.x-layout model: `kv(layer, kind)` names the K/V keys, `te` prefixes the text encoder. */
function tinyTensors(seed, kv, te, unetPrefix) {
  const r = rng(seed);
  const t = (name, dtype, shape) => [
    name,
    dtype,
    shape,
    randomBytes(
      r,
      dtype,
      shape.reduce((a, b) => a * b, 1),
    ),
  ];
  const unet = [t(`${unetPrefix}input_blocks.0.0.weight`, 'F16', [3, 4, 1, 1]), t(`${unetPrefix}time_embed.0.bias`, 'BF16', [5])];
  LDM.forEach((_, i) => {
    unet.push(t(kv(i, 'k'), KV_DTYPES[i % 3], [WIDTH[i], D_TEXT]));
    unet.push(t(`${unetPrefix}odd.${i}.norm`, 'F16', [3])); // 6 bytes: the next tensor starts unaligned
    unet.push(t(kv(i, 'v'), KV_DTYPES[(i + 1) % 3], [WIDTH[i], D_TEXT]));
  });
  unet.push(t(`${unetPrefix}output_blocks.11.0.skip_connection.weight`, 'F32', [7]));
  const text = [
    t(`${te}embeddings.token_embedding.weight`, 'F32', [50, D_TEXT]),
    t(`${te}embeddings.position_embedding.weight`, 'F16', [77, D_TEXT]),
    t(`${te}embeddings.position_ids`, 'I64', [1, 77]),
  ];
  const L = `${te}encoder.layers.0.`;
  for (const p of ['q', 'k', 'v', 'out'])
    text.push(t(`${L}self_attn.${p}_proj.weight`, 'F32', [D_TEXT, D_TEXT]), t(`${L}self_attn.${p}_proj.bias`, 'F32', [D_TEXT]));
  for (const n of ['layer_norm1', 'layer_norm2']) text.push(t(`${L}${n}.weight`, 'F32', [D_TEXT]), t(`${L}${n}.bias`, 'F32', [D_TEXT]));
  text.push(
    t(`${L}mlp.fc1.weight`, 'F32', [64, D_TEXT]),
    t(`${L}mlp.fc1.bias`, 'F32', [64]),
    t(`${L}mlp.fc2.weight`, 'F32', [D_TEXT, 64]),
    t(`${L}mlp.fc2.bias`, 'F32', [D_TEXT]),
  );
  text.push(t(`${te}final_layer_norm.weight`, 'F32', [D_TEXT]), t(`${te}final_layer_norm.bias`, 'F32', [D_TEXT]));
  return { unet, text };
}

function randomEdit(seed, n = 3) {
  const r = rng(seed);
  const step = {
    pairs: [{ source: 'a circle', destination: 'a purple circle' }],
    preserve: [],
    lambda: 0.1,
    augmentations: [],
    mode: 'kv',
    rows: n,
    D: Float32Array.from({ length: n * D_TEXT }, () => r() * 0.4),
    G: Float32Array.from({ length: n * D_TEXT }, () => r() * 0.4),
  };
  return { d: D_TEXT, fingerprint: 'test-fingerprint', steps: [step] };
}

/** W·M in float64 for W [C, d] and M = I + DᵀG. */
function referencePatch(w, C, edit) {
  const d = edit.d;
  const { D, G, rows } = edit.steps[0];
  const out = Float64Array.from(w);
  for (let o = 0; o < C; o++) {
    const proj = new Float64Array(rows);
    for (let i = 0; i < rows; i++) for (let k = 0; k < d; k++) proj[i] += w[o * d + k] * D[i * d + k];
    for (let i = 0; i < rows; i++) for (let k = 0; k < d; k++) out[o * d + k] += proj[i] * G[i * d + k];
  }
  return out;
}

function parse(path) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), data: bytes.subarray(8 + n) };
}

function checkRewritten(src, out, editedKeys, edit) {
  const a = parse(src);
  const b = parse(out);
  const names = Object.keys(a.header).filter((k) => k !== '__metadata__');
  assert.deepEqual(
    Object.keys(b.header).filter((k) => k !== '__metadata__'),
    names,
  );
  let edited = 0;
  for (const name of names) {
    const ea = a.header[name];
    const eb = b.header[name];
    assert.deepEqual(eb, ea, `${name}: header entry kept`);
    const ra = a.data.subarray(...ea.data_offsets);
    const rb = b.data.subarray(...eb.data_offsets);
    if (!editedKeys.has(name)) {
      assert.ok(ra.equals(rb), `${name} must be byte-identical`);
      continue;
    }
    edited++;
    const [C] = ea.shape;
    const want = referencePatch(decode(ra, ea.dtype), C, edit);
    const got = decode(rb, eb.dtype);
    const rel = ea.dtype === 'F32' ? 2e-6 : ea.dtype === 'F16' ? 2 ** -11 : 2 ** -8;
    const scale = Math.max(...want.map(Math.abs));
    for (let i = 0; i < want.length; i++)
      assert.ok(
        Math.abs(got[i] - want[i]) <= rel * Math.abs(want[i]) + 1e-6 * scale,
        `${name}[${i}] (${ea.dtype}): ${got[i]} vs ${want[i]}`,
      );
    assert.ok(!ra.equals(rb), `${name} must change`);
  }
  assert.equal(edited, 32);
  return b.header.__metadata__;
}

test('--save-checkpoint: the 32 K/V = W·M in their dtype, every other byte kept, Python reads the header', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'merged-'));
  try {
    const src = join(dir, 'tiny.safetensors');
    const kvKey = (i, k) => `model.diffusion_model.${LDM[i]}.transformer_blocks.0.attn2.to_${k}.weight`;
    const { unet, text } = tinyTensors(1, kvKey, 'cond_stage_model.transformer.text_model.', 'model.diffusion_model.');
    writeSafetensors(src, [...text.slice(0, 2), ...unet, ...text.slice(2)], { format: 'pt', note: 'kept' });
    const edit = randomEdit(7);
    const out = join(dir, 'merged.safetensors');
    await writeMergedCheckpoint(openCheckpoint(src, { textHeads: 2 }), edit, out, { fingerprint: 'fp-1', chunkBytes: 1000 });
    const keys = new Set(LDM.flatMap((_, i) => ['k', 'v'].map((k) => kvKey(i, k))));
    const md = checkRewritten(src, out, keys, edit);
    assert.equal(md.note, 'kept');
    assert.equal(md['time_edit.fingerprint'], 'fp-1');
    assert.equal(md['time_edit.source'], 'a circle');
    assert.deepEqual(readdirSync(dir).sort(), ['merged.safetensors', 'tiny.safetensors']);

    const py = spawnSync(
      '/usr/bin/python3',
      [
        '-c',
        [
          'import json, struct, sys',
          'f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); rest = len(f.read())',
          'md = h.pop("__metadata__")',
          'assert all(isinstance(k, str) and isinstance(v, str) for k, v in md.items())',
          'spans = sorted(tuple(e["data_offsets"]) for e in h.values())',
          'assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] == rest',
          'print(json.dumps({"tensors": len(h), "n8": (8 + n) % 8, "fingerprint": md["time_edit.fingerprint"]}))',
        ].join('\n'),
        out,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(py.status, 0, py.stderr);
    assert.deepEqual(JSON.parse(py.stdout), { tensors: unet.length + text.length, n8: 0, fingerprint: 'fp-1' });

    // The source changing under the copy: refused, and neither the output nor a temporary file is left.
    const ckpt = openCheckpoint(src, { textHeads: 2 });
    truncateSync(src, statSync(src).size - 3);
    await assert.rejects(writeMergedCheckpoint(ckpt, edit, join(dir, 'bad.safetensors'), { fingerprint: 'x' }), /changed|ended|size/);
    assert.deepEqual(readdirSync(dir).sort(), ['merged.safetensors', 'tiny.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--save-model: a diffusers folder with only unet/ changed, the rest linked', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'diffusers-'));
  try {
    const model = join(dir, 'model');
    for (const sub of ['unet', 'text_encoder', 'tokenizer', 'vae']) mkdirSync(join(model, sub), { recursive: true });
    const kvKey = (i, k) => `${DIFFUSERS[i]}.transformer_blocks.0.attn2.to_${k}.weight`;
    const { unet, text } = tinyTensors(2, kvKey, 'text_model.', '');
    writeSafetensors(join(model, 'unet', 'diffusion_pytorch_model.safetensors'), unet, { format: 'pt' });
    writeSafetensors(join(model, 'text_encoder', 'model.safetensors'), text, { format: 'pt' });
    writeFileSync(join(model, 'model_index.json'), '{"_class_name": "StableDiffusionPipeline"}\n');
    writeFileSync(join(model, 'unet', 'config.json'), '{"cross_attention_dim": 16}\n');
    writeFileSync(join(model, 'vae', 'diffusion_pytorch_model.safetensors'), 'not read');
    const edit = randomEdit(9);
    const out = join(dir, 'edited');
    await writeEditedDiffusersFolder(openCheckpoint(model, { textHeads: 2 }), edit, out, { fingerprint: 'fp-2' });
    const keys = new Set(DIFFUSERS.flatMap((_, i) => ['k', 'v'].map((k) => kvKey(i, k))));
    const md = checkRewritten(
      join(model, 'unet', 'diffusion_pytorch_model.safetensors'),
      join(out, 'unet', 'diffusion_pytorch_model.safetensors'),
      keys,
      edit,
    );
    assert.equal(md['time_edit.fingerprint'], 'fp-2');
    for (const rel of [
      'model_index.json',
      'unet/config.json',
      'text_encoder/model.safetensors',
      'vae/diffusion_pytorch_model.safetensors',
    ]) {
      const a = statSync(join(model, rel));
      const b = statSync(join(out, rel));
      assert.ok(a.ino === b.ino || readFileSync(join(model, rel)).equals(readFileSync(join(out, rel))), `${rel} linked or copied`);
    }
    await assert.rejects(
      writeEditedDiffusersFolder(openCheckpoint(model, { textHeads: 2 }), edit, out, { fingerprint: 'fp-2' }),
      /already exists/,
    );
    assert.deepEqual(readdirSync(dir).sort(), ['edited', 'model']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('float32ToBytes rounds to nearest even in F16 and BF16', () => {
  const dec = (bytes, dtype) => [...decode(Buffer.from(bytes), dtype)];
  // 1 + 2^-11 is halfway between the F16 values 1 and 1 + 2^-10: ties go to the even one (1).
  assert.deepEqual(dec(float32ToBytes(Float32Array.from([1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, -2]), 'F16'), 'F16'), [
    1,
    1,
    1 + 2 ** -9,
    Number.POSITIVE_INFINITY,
    0,
    -2,
  ]);
  assert.deepEqual(dec(float32ToBytes(Float32Array.from([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -3.5]), 'BF16'), 'BF16'), [
    1,
    1,
    1 + 2 ** -6,
    -3.5,
  ]);
  assert.deepEqual(dec(float32ToBytes(Float32Array.from([6e-5, 3e-8]), 'F16'), 'F16'), [1007 * 2 ** -24, 2 ** -24]);
});

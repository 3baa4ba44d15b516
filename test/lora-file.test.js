// `edit --lora` on the embedded model, checked against the kohya convention as written here (not the project's
// reader): key names built from the 16 diffusers attention blocks, one rank with alpha = rank, F32 tensors, metadata
// all strings; an independent loader (the safetensors header parsed by hand, W + (alpha/r)·up·down in float64)
// gives the tool's patched weights W·M to float rounding at full rank. Then the LoRA loaded back: generate --edit
// gives the edit file's images, edit --on composes on it, and LoRAs the tool did not write, or that touch more than
// attn2 to_k/to_v, are refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePng } from '../lib/image/png.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { openEditContext } from '../lib/edit/context.js';
import { loadEdit } from '../lib/edit/edit-file.js';
import { patchUnetWeights } from '../lib/edit/apply.js';
import { findCrossAttention } from '../lib/model/cross-attention.js';
import { tensorToFloat32 } from '../lib/model/onnx/index.js';

const cli = new URL('../lib/cli.js', import.meta.url).pathname;
const modelPresent = existsSync(new URL('../models/toy-shapes/model_index.json', import.meta.url).pathname);

function run(args) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300000 });
  return { code: r.status, err: r.stderr.trim(), out: r.stdout };
}

/** The safetensors layout read by hand: u64 LE header length, JSON header, data buffer. */
function parseSafetensors(path) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const data = bytes.subarray(8 + n);
  const tensor = (name) => {
    const e = header[name];
    assert.equal(e.dtype, 'F32', `${name} dtype`);
    const [b, end] = e.data_offsets;
    const raw = data.subarray(b, end);
    const out = new Float64Array((end - b) / 4);
    for (let i = 0; i < out.length; i++) out[i] = raw.readFloatLE(4 * i);
    return { shape: e.shape, values: out };
  };
  return { header, tensor, bytes };
}

/** The 16 diffusers attention blocks of SD 1.x, down → mid → up, from the UNet's config (down 3×2, mid 1, up 3×3). */
const BLOCKS = [
  ...[0, 1, 2].flatMap((i) => [0, 1].map((j) => `down_blocks.${i}.attentions.${j}`)),
  'mid_block.attentions.0',
  ...[1, 2, 3].flatMap((i) => [0, 1, 2].map((j) => `up_blocks.${i}.attentions.${j}`)),
];
/** The kohya module name: `lora_unet_` + the diffusers module path with `.` → `_`. */
const kohya = (block, p) => `lora_unet_${`${block}.transformer_blocks.0.attn2.to_${p}`.replaceAll('.', '_')}`;

test("edit --lora: kohya keys exactly, alpha = rank, string metadata, and W + (alpha/r)·up·down = the tool's W·M", {
  skip: !modelPresent,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-file-'));
  try {
    const lora = join(dir, 'edit-lora.safetensors');
    const r = run([
      'edit',
      '--source',
      'a circle',
      '--dest',
      'a purple circle',
      '--no-grid',
      '--lora',
      lora,
      '--out',
      join(dir, 'out'),
      '--json',
    ]);
    assert.equal(r.code, 0, r.err);
    const summary = JSON.parse(r.out);
    assert.equal(summary.lora.path, lora);
    const { header, tensor } = parseSafetensors(lora);
    const expected = BLOCKS.flatMap((b) =>
      ['k', 'v'].flatMap((p) => ['alpha', 'lora_down.weight', 'lora_up.weight'].map((s) => `${kohya(b, p)}.${s}`)),
    );
    assert.deepEqual(
      Object.keys(header)
        .filter((k) => k !== '__metadata__')
        .sort(),
      expected.sort(),
    );
    const md = header.__metadata__;
    for (const [k, v] of Object.entries(md)) assert.equal(typeof v, 'string', `metadata ${k}`);
    const rank = Number(md.ss_network_dim);
    // The exact rank is the number of independent rows among the 4 × 77 of the augmented source. With a causal text
    // encoder a position's state depends only on the tokens up to it, so rows with the same token prefix are the
    // same state (the start token in all four prompts, "a" in three); distinct prefixes, 4 × 77 = 308 < d = 512,
    // are independent.
    const tokenizing = await loadPipeline();
    const prefixes = new Set();
    try {
      for (const prompt of ['a circle', 'A photo of a circle', 'An image of a circle', 'A picture of a circle']) {
        const ids = tokenizing.tokenizer.encode(prompt).ids;
        for (let i = 0; i < ids.length; i++) prefixes.add(Array.from(ids.slice(0, i + 1)).join(','));
      }
    } finally {
      await tokenizing.close();
    }
    assert.ok(prefixes.size < 308 && prefixes.size > 77, `${prefixes.size} distinct prefixes`);
    assert.equal(rank, prefixes.size, 'the exact rank of an augmented edit on the embedded model');
    assert.equal(md.ss_network_alpha, String(rank));
    assert.equal(md.ss_network_module, 'networks.lora');
    assert.equal(md.ss_base_model_version, 'sd_v1');
    assert.equal(md.ss_v2, 'False');
    assert.equal(md['modelspec.architecture'], 'stable-diffusion-v1/lora');
    assert.ok(md['modelspec.title'].length > 0);
    assert.equal(md['time_edit.source'], 'a circle');
    assert.equal(md['time_edit.destination'], 'a purple circle');
    assert.equal(md['time_edit.lambda'], '0.1');
    assert.equal(md['time_edit.fingerprint'], summary.fingerprint);

    // The tool's own W' = W·M (its weights-mode patch) and the model's W, both from the ONNX UNet.
    const pipeline = await loadPipeline(undefined, {});
    try {
      const ctx = await openEditContext(pipeline);
      const edit = await loadEdit(join(dir, 'out', 'edit.safetensors'), ctx.fingerprint);
      const patched = await patchUnetWeights(ctx.unet, ctx.map, edit);
      const patchedInits = new Map(patched.graph.initializer.map((t) => [t.name, t]));
      const inits = new Map(ctx.unet.model.graph.initializer.map((t) => [t.name, t]));
      const map = findCrossAttention(ctx.unet.model.graph);
      let worst = 0;
      map.layers.forEach((layer, li) => {
        for (const p of ['k', 'v']) {
          const name = kohya(BLOCKS[li], p);
          const alpha = tensor(`${name}.alpha`);
          assert.deepEqual(alpha.shape, []);
          assert.equal(alpha.values[0], rank);
          const down = tensor(`${name}.lora_down.weight`);
          const up = tensor(`${name}.lora_up.weight`);
          const C = layer.width;
          const d = map.d;
          assert.deepEqual(down.shape, [rank, d]);
          assert.deepEqual(up.shape, [C, rank]);
          const w = tensorToFloat32(inits.get(layer[p].initializer), ctx.unet.dir); // ONNX [d, C]
          const want = tensorToFloat32(patchedInits.get(layer[p].initializer), ctx.unet.dir);
          let err = 0;
          let delta = 0;
          for (let o = 0; o < C; o++)
            for (let i = 0; i < d; i++) {
              let s = 0;
              for (let k = 0; k < rank; k++) s += up.values[o * rank + k] * down.values[k * d + i];
              const got = w[i * C + o] + (alpha.values[0] / rank) * s;
              err = Math.max(err, Math.abs(got - want[i * C + o]));
              delta = Math.max(delta, Math.abs(want[i * C + o] - w[i * C + o]));
            }
          worst = Math.max(worst, err / delta);
        }
      });
      assert.ok(worst < 1e-5, `W + up·down vs W·M: worst error ${worst} of the largest change`);
    } finally {
      await pipeline.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('edit --lora --rank 8: one rank for every module; shared truncation shares lora_down', { skip: !modelPresent }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-rank-'));
  try {
    for (const truncation of ['per-matrix', 'shared']) {
      const lora = join(dir, `${truncation}.safetensors`);
      const r = run([
        'edit',
        '--source',
        'a circle',
        '--dest',
        'a purple circle',
        '--no-grid',
        '--lora',
        lora,
        '--rank',
        '8',
        '--lora-truncation',
        truncation,
        '--out',
        join(dir, 'out'),
      ]);
      assert.equal(r.code, 0, r.err);
      const { header, tensor } = parseSafetensors(lora);
      assert.equal(header.__metadata__.ss_network_dim, '8');
      assert.equal(header.__metadata__['time_edit.truncation'], truncation);
      const downs = BLOCKS.flatMap((b) => ['k', 'v'].map((p) => tensor(`${kohya(b, p)}.lora_down.weight`)));
      for (const down of downs) assert.deepEqual(down.shape, [8, 512]); // d: the embedded model's text width
      const same = downs.every((d) => d.values.every((x, i) => x === downs[0].values[i]));
      assert.equal(same, truncation === 'shared');
    }
    assert.match(
      run(['edit', '--source', 'a circle', '--dest', 'a purple circle', '--rank', '8', '--out', join(dir, 'o2')]).err,
      /--rank needs --lora/,
    );
    const bad = run([
      'edit',
      '--source',
      'a circle',
      '--dest',
      'a purple circle',
      '--lora',
      join(dir, 'x.safetensors'),
      '--lora-truncation',
      'svd',
      '--out',
      join(dir, 'o3'),
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--lora-truncation must be per-matrix or shared/);
    const ckpt = run([
      'edit',
      '--source',
      'a circle',
      '--dest',
      'a purple circle',
      '--save-checkpoint',
      join(dir, 'm.safetensors'),
      '--out',
      join(dir, 'o4'),
    ]);
    assert.equal(ckpt.code, 2);
    assert.match(ckpt.err, /--save-checkpoint needs --model a single \.safetensors checkpoint.*ONNX folder: use --export DIR/);
    assert.equal(existsSync(join(dir, 'o4')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function pixels(path) {
  return decodePng(readFileSync(path)).rgb;
}

test("a LoRA loaded back: generate --edit gives the edit file's images, edit --on composes on it, other LoRAs are refused by name", {
  skip: !modelPresent,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-back-'));
  try {
    const lora = join(dir, 'purple.safetensors');
    assert.equal(
      run(['edit', '--source', 'a circle', '--dest', 'a purple circle', '--no-grid', '--lora', lora, '--out', join(dir, 'e1')]).code,
      0,
    );
    const common = ['generate', 'a circle', 'a square', '--seeds', '0-1', '--steps', '20'];
    for (const mode of ['embedding', 'weights']) {
      assert.equal(run([...common, '--edit', lora, '--edit-mode', mode, '--out', join(dir, `gl-${mode}`)]).code, 0);
      assert.equal(
        run([...common, '--edit', join(dir, 'e1', 'edit.safetensors'), '--edit-mode', mode, '--out', join(dir, `ge-${mode}`)]).code,
        0,
      );
      for (const f of readdirSync(join(dir, `ge-${mode}`))) {
        const a = pixels(join(dir, `gl-${mode}`, f));
        const b = pixels(join(dir, `ge-${mode}`, f));
        let max = 0;
        for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
        assert.ok(max <= 1, `${mode} ${f}: the LoRA's image differs from the edit file's by ${max} levels`);
      }
    }
    // edit --on: the new edit on top of the LoRA equals it on top of the edit file it came from.
    const on = (base, out) =>
      run([
        'edit',
        '--source',
        'a square',
        '--dest',
        'a green square',
        '--on',
        base,
        '--prompt',
        'a circle',
        '--prompt',
        'a square',
        '--seeds',
        '0',
        '--steps',
        '20',
        '--grid-scale',
        '1',
        '--out',
        out,
      ]);
    assert.equal(on(lora, join(dir, 'on-lora')).code, 0);
    assert.equal(on(join(dir, 'e1', 'edit.safetensors'), join(dir, 'on-edit')).code, 0);
    const a = pixels(join(dir, 'on-lora', 'before-after.png'));
    const b = pixels(join(dir, 'on-edit', 'before-after.png'));
    let max = 0;
    for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
    assert.ok(max <= 1, `edit --on a LoRA vs the edit file: ${max} levels`);

    // A LoRA that also touches self-attention is refused naming the key; nothing is written.
    const { header, bytes } = parseSafetensors(lora);
    const extraName = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha';
    const end = Math.max(
      ...Object.entries(header)
        .filter(([k]) => k !== '__metadata__')
        .map(([, e]) => e.data_offsets[1]),
    );
    const n = Number(bytes.readBigUInt64LE(0));
    const withExtra = { ...header, [extraName]: { dtype: 'F32', shape: [], data_offsets: [end, end + 4] } };
    const write = (path, h, extra) => {
      let json = JSON.stringify(h);
      json += ' '.repeat((8 - (json.length % 8)) % 8);
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
      writeFileSync(path, Buffer.concat([head, Buffer.from(json), bytes.subarray(8 + n), extra]));
    };
    write(join(dir, 'extra.safetensors'), withExtra, Buffer.alloc(4));
    const refused = run([...common, '--edit', join(dir, 'extra.safetensors'), '--out', join(dir, 'gx')]);
    assert.equal(refused.code, 1);
    assert.match(refused.err, /attn1_to_q\.alpha'.*not the lora_down\/lora_up\/alpha of a cross-attention to_k\/to_v module/);
    assert.equal(refused.err.split('\n').length, 1);
    assert.equal(existsSync(join(dir, 'gx')), false);
    // A K/V-only LoRA without time-edit's metadata cannot be checked against the model: refused, saying why.
    const foreign = { ...header, __metadata__: { ss_network_module: 'networks.lora' } };
    write(join(dir, 'foreign.safetensors'), foreign, Buffer.alloc(0));
    const f = run([...common, '--edit', join(dir, 'foreign.safetensors'), '--out', join(dir, 'gf')]);
    assert.equal(f.code, 1);
    assert.match(f.err, /not one time-edit wrote/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an ONNX graph whose K/V MatMuls do not carry module scopes cannot be named for a LoRA, and says so', async () => {
  const { kvWeightsOfOnnx } = await import('../lib/edit/lora-modules.js');
  const layer = (k, v) => ({
    index: 0,
    name: 'layer 0',
    width: 4,
    k: { nodeName: k, initializer: 'a' },
    v: { nodeName: v, initializer: 'b' },
  });
  const unet = { model: { graph: { initializer: [] } }, dir: '' };
  assert.throws(
    () => kvWeightsOfOnnx(unet, { d: 8, layers: [layer('', 'MatMul_3')] }),
    /cannot name cross-attention layer 0 for a LoRA: its K\/V MatMul nodes are named '\(unnamed\)' and 'MatMul_3'/,
  );
  assert.throws(
    () =>
      kvWeightsOfOnnx(unet, {
        d: 8,
        layers: [
          layer(
            '/down_blocks.9/attentions.0/transformer_blocks.0/attn2/to_k/MatMul',
            '/down_blocks.9/attentions.0/transformer_blocks.0/attn2/to_v/MatMul',
          ),
        ],
      }),
    /not \/<diffusers module>\/to_k\/MatMul/,
  );
});

// Bad input to loadPipeline / generate / the CLI: a clear error naming the problem, no files written; exit status 2
// for a bad command line, 1 for a model that is missing or broken (docs/errors.md).
// Also the CLI's happy path (files, --json, --grid, byte-identical reruns) and `tokenize`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPipeline } from '../lib/model/pipeline.js';
import { generate } from '../lib/sample/generate.js';
import { readPngText } from '../lib/image/png.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fx = (name) => join(root, 'test', 'fixtures', name);
const cli = join(root, 'lib', 'cli.js');

function tmp() {
  return mkdtempSync(join(tmpdir(), 'gen-'));
}

/** A copy of the tiny fixture with `change(dir)` applied. */
function brokenCopy(change) {
  const dir = join(tmp(), 'model');
  cpSync(fx('tiny-sd'), dir, { recursive: true });
  change(dir);
  return dir;
}

function runCli(args, input) {
  return spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', input, timeout: 120000 });
}

test('loadPipeline: clear errors for broken folders', async () => {
  const cases = [
    [join(root, 'no-such-model'), /model folder .*no-such-model does not exist/],
    [brokenCopy((d) => rmSync(join(d, 'unet'), { recursive: true })), /not a complete SD pipeline folder: missing unet\/model\.onnx/],
    [
      brokenCopy((d) => rmSync(join(d, 'tokenizer'), { recursive: true }) || rmSync(join(d, 'scheduler'), { recursive: true })),
      /missing tokenizer, scheduler\/scheduler_config\.json/,
    ],
    [brokenCopy((d) => writeFileSync(join(d, 'unet', 'model.onnx'), 'this is not a protobuf')), /cannot load unet\/model\.onnx/],
    [brokenCopy((d) => writeFileSync(join(d, 'model_index.json'), '{"_class_name": ')), /model_index\.json is not valid JSON/],
    [
      brokenCopy((d) => copyFileSync(fx('tiny-sd-bad/ehs-int32.onnx'), join(d, 'unet', 'model.onnx'))),
      /input encoder_hidden_states has type int32, expected float32 or float16/,
    ],
    [
      brokenCopy((d) => copyFileSync(fx('tiny-sd-bad/packed-kv.onnx'), join(d, 'unet', 'model.onnx'))),
      /"GPU-optimized" UNet \(found MultiHeadAttention\)/,
    ],
    [
      brokenCopy((d) => copyFileSync(join(d, 'vae_decoder', 'model.onnx'), join(d, 'unet', 'model.onnx'))),
      /unet\/model\.onnx: missing input\(s\) sample, timestep, encoder_hidden_states; it has latent_sample/,
    ],
    [
      brokenCopy((d) => copyFileSync(join(d, 'unet', 'model.onnx'), join(d, 'vae_decoder', 'model.onnx'))),
      /vae_decoder\/model\.onnx: expected one input latent_sample/,
    ],
    [
      brokenCopy((d) => copyFileSync(join(d, 'vae_decoder', 'model.onnx'), join(d, 'text_encoder', 'model.onnx'))),
      /text_encoder\/model\.onnx: expected one input input_ids/,
    ],
  ];
  for (const [dir, re] of cases)
    await assert.rejects(loadPipeline(dir, { threads: 1 }), (err) => err.name === 'ModelError' && re.test(err.message), `${dir}: ${re}`);
  await assert.rejects(loadPipeline(fx('tiny-sd'), { device: 'tpu' }), /device must be cpu or cuda/);
  await assert.rejects(loadPipeline(fx('tiny-sd'), { threads: 0 }), /threads must be a positive integer/);
});

test('loadPipeline --device cuda: loads, or says the CUDA provider is missing', async () => {
  try {
    const p = await loadPipeline(fx('tiny-sd'), { device: 'cuda' });
    await p.close();
  } catch (err) {
    assert.equal(err.name, 'BackendUnavailableError');
    assert.match(err.message, /^onnxruntime-node's CUDA execution provider is not installed/);
  }
});

test('generate: bad options fail before any work', async () => {
  const p = await loadPipeline(fx('tiny-sd'), { threads: 1 });
  try {
    const ok = { prompts: ['a circle'], seeds: [0], steps: 2, guidance: 7.5, height: 16, width: 16 };
    const runs = p.stats.runs;
    const cases = [
      [{ prompts: [] }, /no prompts/],
      [{ seeds: [] }, /no seeds/],
      [{ steps: 0 }, /steps must be a positive integer/],
      [{ steps: -3 }, /steps must be a positive integer/],
      [{ seeds: ['seven'] }, /seed must be an integer/],
      [{ seeds: [1.5] }, /seed must be an integer/],
      [{ guidance: NaN }, /guidance must be a number/],
      [{ height: 18 }, /height must be a positive multiple of 4 for this model/],
      [{ width: 0 }, /width must be a positive multiple of 4 for this model/],
      [{ scheduler: 'lms' }, /unknown scheduler/],
      [
        { conditioning: { cond: { encoderHiddenStates: new Float32Array(5) }, uncond: { encoderHiddenStates: new Float32Array(77 * 8) } } },
        /conditioning\.cond\.encoderHiddenStates has 5 values/,
      ],
      [
        {
          negativePrompt: 'x',
          conditioning: {
            cond: { encoderHiddenStates: new Float32Array(77 * 8) },
            uncond: { encoderHiddenStates: new Float32Array(77 * 8) },
          },
        },
        /cannot be combined/,
      ],
    ];
    for (const [change, re] of cases) await assert.rejects(generate(p, { ...ok, ...change }), re, JSON.stringify(change));
    assert.equal(p.stats.runs, runs, 'a bad option ran a model');
  } finally {
    await p.close();
  }
});

test('CLI generate: bad input exits 2 (a bad command line) or 1 (a bad model) with one clear line and writes nothing', () => {
  const base = tmp();
  const out = join(base, 'out');
  const model = fx('tiny-sd');
  const cases = [
    [['--model', model, '--out', out], /no prompts given/, 2],
    [['a circle', '--model', model, '--out', out, '--steps', '0'], /--steps must be a positive integer, got '0'/, 2],
    [['a circle', '--model', model, '--out', out, '--seeds', 'abc'], /--seeds: 'abc' is not a seed/, 2],
    [['a circle', '--model', model, '--out', out, '--seed', '1.5'], /--seed: '1\.5' is not a seed/, 2],
    [['a circle', '--model', join(base, 'nope'), '--out', out], /model folder .*nope does not exist/, 1],
    [
      ['a circle', '--model', brokenCopy((d) => writeFileSync(join(d, 'unet', 'model.onnx'), 'garbage')), '--out', out],
      /cannot load unet\/model\.onnx/,
      1,
    ],
    [['a circle', '--model', model, '--out', out, '--height', '30'], /--height must be a positive multiple of 4/, 2],
    [['a circle', '--model', model, '--out', out, '--device', 'gpu'], /--device must be cpu or cuda/, 2],
    [['a circle', '--model', model, '--out', out, '--bogus'], /Unknown option '--bogus'/, 2],
  ];
  for (const [args, re, code] of cases) {
    const r = runCli(['generate', ...args]);
    assert.equal(r.status, code, `${args.join(' ')}: status ${r.status}, stderr ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace was printed');
    assert.equal(existsSync(out), false, `${args.join(' ')} created the output folder`);
  }
  const file = join(base, 'a-file');
  writeFileSync(file, 'x');
  const r = runCli(['generate', 'a circle', '--model', model, '--out', file]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--out .*a-file exists and is not a folder/);
});

test('CLI generate: files, --json, byte-identical reruns, --grid', () => {
  const base = tmp();
  const args = (out) => [
    'generate',
    'a red circle',
    'a blue square',
    '--model',
    fx('tiny-sd'),
    '--seeds',
    '0-2',
    '--steps',
    '3',
    '--height',
    '16',
    '--width',
    '16',
    '--out',
    out,
    '--json',
    '--threads',
    '1',
  ];
  const r1 = runCli(args(join(base, 'a')));
  assert.equal(r1.status, 0, r1.stderr);
  const j = JSON.parse(r1.stdout);
  assert.equal(j.images.length, 6);
  assert.deepEqual(
    j.images.map((i) => [i.prompt, i.seed]),
    [
      ['a red circle', 0],
      ['a red circle', 1],
      ['a red circle', 2],
      ['a blue square', 0],
      ['a blue square', 1],
      ['a blue square', 2],
    ],
  );
  assert.deepEqual(readdirSync(join(base, 'a')).sort(), j.images.map((i) => i.path.split('/').pop()).sort());
  assert.equal(j.images[0].path, join(base, 'a', '00-a-red-circle-seed0.png'));
  const meta = readPngText(readFileSync(j.images[4].path));
  assert.equal(meta.prompt, 'a blue square');
  assert.equal(meta.seed, '1');
  assert.equal(meta.steps, '3');
  const r2 = runCli(args(join(base, 'b')));
  assert.equal(r2.status, 0, r2.stderr);
  for (const name of readdirSync(join(base, 'a')))
    assert.deepEqual(readFileSync(join(base, 'b', name)), readFileSync(join(base, 'a', name)), name);
  assert.notDeepEqual(
    readFileSync(join(base, 'a', '00-a-red-circle-seed0.png')),
    readFileSync(join(base, 'a', '00-a-red-circle-seed1.png')),
  );
  const r3 = runCli([...args(join(base, 'g')), '--grid']);
  assert.equal(r3.status, 0, r3.stderr);
  const g = JSON.parse(r3.stdout);
  assert.equal(g.grid, join(base, 'g', 'grid.png'));
  assert.deepEqual(readdirSync(join(base, 'g')), ['grid.png']);
  assert.deepEqual(g.gridOrder.prompts, ['a red circle', 'a blue square']);
  assert.equal(readPngText(readFileSync(g.grid)).prompts, JSON.stringify(['a red circle', 'a blue square']));
});

const embedded = join(root, 'models', 'toy-shapes');
test('CLI generate: the embedded model is the default from any working directory', {
  skip: existsSync(join(embedded, 'model_index.json')) ? false : 'embedded model not present',
}, () => {
  const cwd = tmp();
  const r = spawnSync(process.execPath, [cli, 'generate', 'a circle', '--seeds', '0-1', '--steps', '2', '--out', 'out/', '--json'], {
    cwd,
    encoding: 'utf8',
    timeout: 120000,
  });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.model, embedded);
  assert.deepEqual(readdirSync(join(cwd, 'out')).sort(), ['00-a-circle-seed0.png', '00-a-circle-seed1.png']);
  // unet/config.json: 3 downsamplings × VAE factor 4 -> sides must be multiples of 32.
  const bad = spawnSync(process.execPath, [cli, 'generate', 'a circle', '--height', '48', '--out', 'bad/'], {
    cwd,
    encoding: 'utf8',
    timeout: 120000,
  });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /height must be a positive multiple of 32 for this model/);
  assert.equal(existsSync(join(cwd, 'bad')), false);
});

test('CLI tokenize: 77 ids per prompt, from arguments or stdin', () => {
  const r = runCli(['tokenize', '--model', fx('tiny-sd'), 'a red circle', 'a blue square']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  for (const ids of lines) assert.equal(ids.length, 77);
  const s = runCli(['tokenize', '--tokenizer', fx('tiny-sd/tokenizer')], 'a red circle\n\na blue square\n');
  assert.equal(s.status, 0, s.stderr);
  assert.deepEqual(
    s.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)),
    lines,
  );
  const long = runCli(['tokenize', '--model', fx('tiny-sd'), Array(80).fill('red').join(' ')]);
  assert.equal(long.status, 0);
  assert.match(long.stderr, /truncated/);
  assert.equal(JSON.parse(long.stdout).length, 77);
  const bad = runCli(['tokenize', '--tokenizer', join(root, 'nope'), 'x']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /tokenizer folder .*nope does not exist/);
});

test('CLI generate: a long command line (many long prompts) works instead of crashing onnxruntime', () => {
  // onnxruntime walks /proc/self/cmdline recursively when it creates a session: a 4 MB worker stack overflowed
  // (SIGSEGV) at ~12 KB. 12 prompts of 4,000 characters make a 48 KB command line.
  const out = join(tmp(), 'long');
  const prompt = 'red '.repeat(1000);
  const prompts = Array.from({ length: 12 }, (_, i) => `${i} ${prompt}`);
  const r = runCli([
    'generate',
    ...prompts,
    '--model',
    fx('tiny-sd'),
    '--seeds',
    '0',
    '--steps',
    '1',
    '--height',
    '16',
    '--width',
    '16',
    '--out',
    out,
    '--threads',
    '1',
  ]);
  assert.equal(r.signal, null, `killed by ${r.signal}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readdirSync(out).filter((f) => f.endsWith('.png')).length, 12);
  assert.match(r.stderr, /prompt 1 has more than \d+ tokens and was truncated/);
});

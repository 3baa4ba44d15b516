// Every config value the library reads from a pipeline folder is checked for its type and range, and a bad one is a
// ModelError naming the file and the key (exit 1), never black images with exit 0 or an engine error. Also: memory
// estimates refuse impossible image sizes before any work, and damaged tokenizer files or unreadable folders say
// what is wrong. Each fixture is models/toy-shapes copied to a temp folder (the .onnx files hard-linked) with one
// value damaged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError, ModelError } from '../lib/errors.js';
import { loadPipeline } from '../lib/model/pipeline.js';
import { ClipTokenizer } from '../lib/model/tokenizer.js';
import { generate } from '../lib/sample/generate.js';
import { createScheduler } from '../lib/sample/schedulers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const toy = join(root, 'models', 'toy-shapes');
const cli = join(root, 'lib', 'cli.js');
const modelPresent = existsSync(join(toy, 'model_index.json'));
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
// As root the EACCES case runs the CLI as nobody, which needs to reach this checkout (a clone inside a 0700 temp
// folder is out of its reach): checked once, so such a checkout skips the case with its reason instead of failing.
const cliPath = fileURLToPath(new URL('../lib/cli.js', import.meta.url));
const nobodyReachesCli =
  isRoot && existsSync('/usr/sbin/runuser') && spawnSync('/usr/sbin/runuser', ['-u', 'nobody', '--', 'test', '-r', cliPath]).status === 0;

/** A copy of toy-shapes in a new temp folder: large files hard-linked (copied across devices), JSON copied. */
function copyToy() {
  const base = mkdtempSync(join(tmpdir(), 'config-hardening-'));
  const dir = join(base, 'model');
  const walk = (from, to) => {
    mkdirSync(to, { recursive: true });
    for (const name of readdirSync(from)) {
      const src = join(from, name);
      const dst = join(to, name);
      if (statSync(src).isDirectory()) walk(src, dst);
      else if (name.endsWith('.onnx')) {
        try {
          linkSync(src, dst);
        } catch {
          copyFileSync(src, dst);
        }
      } else copyFileSync(src, dst);
    }
  };
  walk(toy, dir);
  return { base, dir };
}

/** toy-shapes with `file`'s JSON key `key` set to `value` (undefined deletes it). */
function damaged(file, key, value) {
  const fx = copyToy();
  const path = join(fx.dir, file);
  const json = JSON.parse(readFileSync(path, 'utf8'));
  if (value === undefined) delete json[key];
  else json[key] = value;
  writeFileSync(path, JSON.stringify(json));
  return fx;
}

function runCli(args, opts = {}) {
  const r = spawnSync(opts.command ?? process.execPath, [...(opts.prefix ?? []), cli, ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: opts.timeout ?? 120000,
    env: { ...process.env, TIME_EDIT_DEBUG: '' },
  });
  return { code: r.status, signal: r.signal, err: r.stderr, out: r.stdout };
}

const SCHED = 'scheduler/scheduler_config.json';
const cases = [
  [SCHED, 'steps_offset', -1],
  [SCHED, 'steps_offset', -1000],
  [SCHED, 'steps_offset', 2000],
  [SCHED, 'steps_offset', '1'],
  [SCHED, 'steps_offset', 0.5],
  [SCHED, 'beta_start', 'x'],
  [SCHED, 'beta_end', -1],
  [SCHED, 'beta_end', 2],
  [SCHED, 'num_train_timesteps', -5],
  [SCHED, 'num_train_timesteps', 1e9],
  [SCHED, 'num_train_timesteps', '1000'],
  [SCHED, '_class_name', 5],
  [SCHED, 'beta_schedule', 7],
  [SCHED, 'trained_betas', ['a']],
  [SCHED, 'set_alpha_to_one', 'no'],
  [SCHED, 'clip_sample', 1],
  [SCHED, 'clip_sample_range', 0],
  [SCHED, 'timestep_spacing', 3],
  [SCHED, 'prediction_type', 1],
  ['vae_decoder/config.json', 'scaling_factor', 'x'],
  ['vae_decoder/config.json', 'scaling_factor', 0],
  ['vae_decoder/config.json', 'downsampling_factor', 2.5],
  ['vae_decoder/config.json', 'block_out_channels', 'x'],
  ['unet/config.json', 'sample_size', '8'],
  ['unet/config.json', 'in_channels', '4'],
  ['unet/config.json', 'block_out_channels', [32, '64']],
  ['model_index.json', '_class_name', 5],
];

test('a wrong value in any config the library reads is a ModelError naming the file and key', { skip: !modelPresent }, async () => {
  for (const [file, key, value] of cases) {
    const fx = damaged(file, key, value);
    try {
      await assert.rejects(
        async () => {
          const p = await loadPipeline(fx.dir);
          await p.close();
        },
        (err) => {
          assert.ok(err instanceof ModelError, `${file} ${key}=${JSON.stringify(value)}: ${err.name}: ${err.message}`);
          assert.equal(err.file, file);
          assert.ok(err.message.includes(file) && err.message.includes(key), `${file} ${key}: ${err.message}`);
          return true;
        },
        `${file} ${key}=${JSON.stringify(value)} was accepted`,
      );
    } finally {
      rmSync(fx.base, { recursive: true, force: true });
    }
  }
});

test('the CLI exits 1 with one line naming the file and key for a bad config value (no black images)', { skip: !modelPresent }, () => {
  const fx = damaged(SCHED, 'steps_offset', '1');
  try {
    const r = runCli(['generate', 'a circle', '--model', fx.dir, '--steps', '2', '--out', join(fx.base, 'out')]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /^time-edit: scheduler\/scheduler_config\.json: steps_offset must be an integer ≥ 0 and ≤ 999, got '1'\n$/);
    assert.equal(existsSync(join(fx.base, 'out')), false);
  } finally {
    rmSync(fx.base, { recursive: true, force: true });
  }
});

test('createScheduler checks the config it is given and bounds steps for every scheduler', () => {
  const cfg = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' };
  assert.throws(
    () => createScheduler({ ...cfg, num_train_timesteps: -5 }, 10),
    (e) => e instanceof ModelError && /num_train_timesteps must be an integer ≥ 2 and ≤ 100000, got -5/.test(e.message),
  );
  assert.throws(
    () => createScheduler({ ...cfg, steps_offset: '1' }, 10, 'ddim'),
    (e) => e instanceof ModelError && /steps_offset/.test(e.message),
  );
  for (const name of ['euler', 'dpm++2m', 'pndm', 'ddim']) {
    for (const steps of [1001, 200000]) {
      assert.throws(
        () => createScheduler(cfg, steps, name),
        (e) => e instanceof InputError && e.argument === 'steps' && /must not exceed num_train_timesteps \(1000\)/.test(e.message),
        `${name} ${steps}`,
      );
    }
    // The largest allowed run still builds, with every timestep inside the trained range.
    const s = createScheduler(cfg, 1000, name);
    assert.ok(
      s.timesteps.every((t) => t >= 0 && t <= 999),
      name,
    );
  }
  // An offset that pushes the last timestep past T − 1 is refused instead of indexing past ᾱ.
  assert.throws(
    () => createScheduler({ ...cfg, steps_offset: 1 }, 1000, 'ddim'),
    (e) => e instanceof InputError && /timestep 1000, outside the trained timesteps 0…999/.test(e.message),
  );
});

test('a run whose memory estimate exceeds the limit is refused before any work, naming height, width and batch', {
  skip: !modelPresent,
}, async () => {
  const pipeline = await loadPipeline();
  try {
    const base = {
      prompts: ['a circle'],
      seeds: [0],
      steps: 1,
      guidance: 7.5,
      batchSize: 1,
      onProgress: () => assert.fail('a UNet call was made'),
    };
    for (const side of [8192, 1000000]) {
      await assert.rejects(generate(pipeline, { ...base, height: side, width: side }), (e) => {
        assert.ok(e instanceof InputError, `${side}: ${e.name}: ${e.message}`);
        assert.match(
          e.message,
          new RegExp(`height ${side}, width ${side}, batchSize 1\\) needs an estimated .* more than this machine's memory`),
        );
        assert.equal(e.message.includes('\n'), false);
        return true;
      });
    }
    // maxMemoryBytes: the caller's own limit. 32×32 needs well over 1 kB (the RGB bytes alone are 3072).
    await assert.rejects(
      generate(pipeline, { ...base, height: 32, width: 32, maxMemoryBytes: 1000 }),
      /needs an estimated .* more than maxMemoryBytes \(1\.00 KB\)/,
    );
    await assert.rejects(generate(pipeline, { ...base, height: 32, width: 32, maxMemoryBytes: -1 }), /maxMemoryBytes must be a number > 0/);
  } finally {
    await pipeline.close();
  }
});

test('generate --height 8192 --width 8192 exits 2 at once instead of growing for minutes', { skip: !modelPresent }, () => {
  const out = mkdtempSync(join(tmpdir(), 'config-hardening-out-'));
  try {
    const t0 = Date.now();
    const r = runCli(
      ['generate', 'a circle', '--height', '8192', '--width', '8192', '--batch', '1', '--steps', '1', '--out', join(out, 'o')],
      { timeout: 30000 },
    );
    assert.equal(r.code, 2, `${r.signal ?? ''} ${r.err}`);
    assert.match(
      r.err,
      /^time-edit: the run \(height 8192, width 8192, batchSize 1\) needs an estimated .*: use smaller images or a smaller batch\n$/,
    );
    assert.ok(Date.now() - t0 < 25000);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('merges.txt: a line that is not two symbols, or not UTF-8, is refused naming the file and line', { skip: !modelPresent }, async () => {
  const fx = copyToy();
  try {
    const merges = join(fx.dir, 'tokenizer', 'merges.txt');
    const good = readFileSync(merges);
    // The untouched copy loads: the check accepts the real file.
    await ClipTokenizer.fromFolder(join(fx.dir, 'tokenizer'));
    const lines = good.toString('utf8').split('\n');
    writeFileSync(merges, [...lines.slice(0, 2), 'a b c', ...lines.slice(2)].join('\n'));
    await assert.rejects(
      ClipTokenizer.fromFolder(join(fx.dir, 'tokenizer')),
      (e) => e instanceof ModelError && e.file === merges && /merges\.txt line 3 is not a merge/.test(e.message),
    );
    writeFileSync(merges, [...lines.slice(0, 3), 'nospace', ...lines.slice(3)].join('\n'));
    await assert.rejects(ClipTokenizer.fromFolder(join(fx.dir, 'tokenizer')), /merges\.txt line 4 is not a merge/);
    writeFileSync(
      merges,
      Buffer.concat([
        Buffer.from(`${lines.slice(0, 4).join('\n')}\n`),
        Buffer.from([0x61, 0x20, 0xff, 0xfe, 0x0a]),
        Buffer.from(lines.slice(4).join('\n')),
      ]),
    );
    await assert.rejects(
      ClipTokenizer.fromFolder(join(fx.dir, 'tokenizer')),
      (e) => e instanceof ModelError && /merges\.txt line 5 is not valid UTF-8/.test(e.message),
    );
  } finally {
    rmSync(fx.base, { recursive: true, force: true });
  }
});

test('a text_encoder that is a file, or unreadable, is reported as such, not as missing', { skip: !modelPresent }, async () => {
  const fx = copyToy();
  try {
    rmSync(join(fx.dir, 'text_encoder'), { recursive: true });
    writeFileSync(join(fx.dir, 'text_encoder'), 'not a folder');
    await assert.rejects(loadPipeline(fx.dir), (e) => {
      assert.ok(e instanceof ModelError);
      assert.match(e.message, /text_encoder\/model\.onnx cannot be reached: text_encoder is a file, not a folder/);
      assert.doesNotMatch(e.message, /missing/);
      return true;
    });
  } finally {
    rmSync(fx.base, { recursive: true, force: true });
  }
});

test('an unreadable text_encoder folder (EACCES) is reported as unreadable', {
  skip: !modelPresent
    ? 'the embedded model is missing'
    : isRoot && !nobodyReachesCli
      ? "as root, nobody cannot run this checkout's lib/cli.js (no runuser, or a folder above it is private)"
      : false,
}, () => {
  const fx = copyToy();
  try {
    chmodSync(fx.base, 0o755);
    chmodSync(join(fx.dir, 'text_encoder'), 0o000);
    // Root ignores file permissions: run the CLI as nobody then.
    const opts = isRoot ? { command: '/usr/sbin/runuser', prefix: ['-u', 'nobody', '--', process.execPath] } : {};
    const g = runCli(['generate', 'a circle', '--model', fx.dir, '--out', join(fx.base, 'out')], opts);
    assert.equal(g.code, 1, g.err);
    assert.match(g.err, /text_encoder\/model\.onnx cannot be read: EACCES/);
    assert.doesNotMatch(g.err, /missing/);
  } finally {
    chmodSync(join(fx.dir, 'text_encoder'), 0o755);
    rmSync(fx.base, { recursive: true, force: true });
  }
});

// `bench generate --memory`: the table's structure and sane numbers (positive, RSS above the weights at most the
// peak, ratios to the first setting 1 for the first), its flag errors, and the SD-layout fixture path: without
// --model the bench makes the fixture with scripts/make-sd-layout-fixture.py (PyTorch) and prints PyTorch's
// reference. No timing assertions: speed is what the benchmark reports, not what a test can hold on a shared machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cli = new URL('../lib/cli.js', import.meta.url).pathname;
const tiny = new URL('./fixtures/tiny-sd', import.meta.url).pathname;
const python = process.env.TIME_EDIT_PYTHON || '/usr/bin/python3';
const requireFixtures = process.env.TIME_EDIT_REQUIRE_FIXTURES === '1';
const hasTorch = spawnSync(python, ['-c', 'import torch, onnx'], { stdio: 'ignore' }).status === 0;
const noTorch = hasTorch
  ? false
  : requireFixtures
    ? false // run, and fail: CI installs PyTorch, so a missing one is a broken setup, not a reason to skip
    : `${python} has no torch/onnx (Debian: apt-get install python3-torch python3-onnx)`;

function bench(args, env = {}) {
  const r = spawnSync(process.execPath, [cli, 'bench', 'generate', ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 300_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The checks every measured report must pass. */
function checkReport(report, settingCount) {
  assert.ok(report.weightsOnly.peakRssBytes > 10e6, `weights-only RSS ${report.weightsOnly.peakRssBytes}`);
  assert.equal(report.settings.length, settingCount);
  for (const s of report.settings) {
    assert.equal(s.status, 'ok', `${s.label}: ${s.message}`);
    assert.ok(s.peakRssBytes > 0 && s.peakRssBytes < 64e9, `${s.label}: peak ${s.peakRssBytes}`);
    assert.ok(s.aboveWeightsBytes <= s.peakRssBytes, `${s.label}: above weights > peak`);
    // Same weights, a larger image: the peak cannot be far below the weights-only run's (RSS noise aside).
    assert.ok(s.aboveWeightsBytes > -0.1 * report.weightsOnly.peakRssBytes, `${s.label}: above weights ${s.aboveWeightsBytes}`);
    assert.ok(s.seconds > 0 && s.secondsPerImage > 0 && s.imagesPerSecond > 0, `${s.label}: times`);
    assert.ok(Math.abs(s.secondsPerImage * s.imagesPerSecond - 1) < 1e-9);
    assert.ok(Math.abs(s.secondsPerImage * report.images - s.seconds) < 1e-9);
  }
  assert.equal(report.settings[0].timePerImageRatio, 1);
  // Ratios of RSS above the weights are given only when the first setting is above them by more than noise (10 MB).
  assert.equal(report.settings[0].aboveWeightsRatio, report.settings[0].aboveWeightsBytes >= 10e6 ? 1 : null);
  const [a, b] = report.settings;
  if (b !== undefined) assert.ok(Math.abs(b.timePerImageRatio - b.secondsPerImage / a.secondsPerImage) < 1e-9);
}

test('bench generate --memory on the tiny fixture: JSON report and the printed table', () => {
  const args = ['--memory', '--model', tiny, '--size', '32', '--images', '2', '--steps', '2', '--settings', 'defaults;--batch 1'];
  const j = bench([...args, '--json']);
  assert.equal(j.code, 0, j.stderr);
  const report = JSON.parse(j.stdout);
  assert.equal(report.size, 32);
  assert.equal(report.images, 2);
  assert.equal(report.steps, 2);
  assert.equal(report.guidance, 7.5);
  assert.ok(report.unetCallsPerImage >= 2);
  assert.deepEqual(
    report.settings.map((s) => [s.label, s.flags]),
    [
      ['defaults', []],
      ['--batch 1', ['--batch', '1']],
    ],
  );
  checkReport(report, 2);
  // tiny-sd was not made by the fixture script: no PyTorch twin of its UNet, and the report says why.
  assert.match(report.pytorch.skipped, /not made by scripts\/make-sd-layout-fixture\.py/);
  assert.equal(report.settings[0].speedupVsPytorch, null);

  const t = bench(args);
  assert.equal(t.code, 0, t.stderr);
  const lines = t.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^model .*tiny-sd, 32×32, 2 images per setting, 2 \w+ steps/);
  assert.match(lines[1], /load average [\d.]+ [\d.]+ [\d.]+ at the start/);
  assert.match(lines[2], /^weights only .*peak RSS \d+\.\d\d GB$/);
  const table = lines.filter((l) => l.startsWith('|'));
  assert.equal(table.length, 4, 'header, rule and one row per setting');
  const cells = (l) =>
    l
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
  assert.deepEqual(cells(table[0]).slice(0, 5), ['setting', 'peak RSS', 'above weights', 's/image', 'images/s']);
  assert.deepEqual(
    table.slice(2).map((l) => cells(l)[0]),
    ['defaults', '--batch 1'],
  );
  for (const row of table.slice(2)) {
    const c = cells(row);
    assert.match(c[1], /^\d+\.\d\d GB$/);
    assert.ok(Number(c[3]) > 0 && Number(c[4]) > 0, row);
  }
  assert.equal(cells(table[2])[6], '1.00×');
  assert.match(t.stdout, /PyTorch reference: skipped: /);
});

test('bench generate --memory: flag errors are one-line usage errors (exit 2)', () => {
  for (const [args, pattern] of [
    [['--memory', '--batch', '2'], /--batch has no meaning with --memory/],
    [['--memory', '--runs', '2'], /--runs has no meaning with --memory/],
    [['--images', '2'], /--images needs --memory/],
    [['--settings=--model x'], /--settings: --model is set by bench generate itself/],
    [['--settings', 'batch 2'], /does not start with a flag/],
    [['--settings', ';'], /no settings/],
    [['--memory', '--model', tiny, '--size', '30'], /--size must be a multiple of 4/],
    [['--memory', '--rss-limit', 'lots'], /--rss-limit must be a number/],
  ]) {
    const r = bench(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
});

test('bench generate --memory makes the SD-layout fixture when no --model is given, and measures PyTorch on it', { skip: noTorch }, () => {
  const cache = mkdtempSync(join(tmpdir(), 'bench-cache-'));
  try {
    const r = bench(['--memory', '--size', '64', '--images', '1', '--steps', '1', '--settings', 'defaults', '--json'], {
      XDG_CACHE_HOME: cache,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /making the SD-layout fixture in /);
    const report = JSON.parse(r.stdout);
    assert.ok(report.model.startsWith(join(cache, 'time-edit', 'sd-layout-')), report.model);
    // SD 1.x's attention layout at a tenth of its width: 8 heads, cross-attention width 768, 2 layers per block.
    const config = JSON.parse(readFileSync(join(report.model, 'unet', 'config.json'), 'utf8'));
    assert.deepEqual(config.block_out_channels, [32, 64, 128, 128]);
    assert.equal(config.attention_head_dim, 8);
    assert.equal(config.cross_attention_dim, 768);
    assert.equal(config.layers_per_block, 2);
    assert.ok(existsSync(join(report.model, 'sd_layout_fixture.json')));
    checkReport(report, 1);
    const p = report.pytorch;
    assert.equal(p.skipped, undefined, p.skipped);
    assert.equal(p.rows, 2);
    assert.equal(p.latent, 8);
    assert.ok(p.wallSeconds > 0);
    assert.ok(p.peakRssBytes >= p.rssBeforeCallBytes && p.rssBeforeCallBytes > 0);
    assert.ok(report.settings[0].speedupVsPytorch > 0);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

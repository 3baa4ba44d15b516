// `time-edit bench generate --memory`: peak memory and speed of `generate` at SD's size, one child process per
// setting so that each peak RSS is that setting's own. A setting is a list of `generate` flags (whatever the
// generate command accepts: --batch, --max-memory, …); every child runs the real command on the same prompt, seeds,
// size and steps. Beside them: the weights-only RSS (sessions created and run once at the smallest image, so what
// remains is weights and runtime) and, on the SD-layout fixture, PyTorch's time and peak for one UNet call of the
// same UNet, measured in the same run (ratios between rows of one run are what a shared machine can compare).
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelError } from '../../../errors.js';
import { UsageError } from '../../errors.js';
import { loadPipeline } from '../../../model/pipeline.js';
import { createScheduler, type SchedulerName } from '../../../sample/schedulers.js';
import { runMeasuredChild, type MeasuredChild } from './measured-child.js';
import { defaultFixtureDir, fixtureScript, makeFixture, torchReference, type TorchReference } from './sd-layout-fixture.js';

const cliPath = fileURLToPath(new URL('../../../cli.js', import.meta.url));
const reporterUrl = new URL('./peak-rss-reporter.js', import.meta.url).href;

/** The prompt every child samples. */
export const MEMORY_BENCH_PROMPT = 'a circle';

/**
 * The settings compared when --settings is not given: unsliced self-attention at one image per UNet call first (the
 * reference of the ratios: the smallest run without the memory plan), then the plan's defaults, then 16 slices.
 */
export const DEFAULT_MEMORY_SETTINGS: readonly string[] = ['--attention-slices 1 --batch 1', 'defaults', '--attention-slices 16 --batch 1'];

/** generate flags the benchmark sets for every child itself; a setting may not change them (the rows would not compare). */
const BENCH_OWNED_FLAGS = new Set([
  '--model',
  '--out',
  '--json',
  '--seeds',
  '--seed',
  '--height',
  '--width',
  '--steps',
  '--guidance',
  '--scheduler',
  '--threads',
  '--device',
  '--grid',
]);

export interface MemorySetting {
  /** as given ("defaults" for today's defaults) */
  label: string;
  /** the generate flags it adds */
  flags: string[];
  /** another time-edit's lib/cli.js whose generate runs this setting (an older checkout, for before/after); null: this one */
  cli: string | null;
}

/**
 * `--settings` text → settings: entries separated by ';', each a whitespace-separated list of generate flags
 * ("defaults" or an empty entry: no flags), optionally led by `@PATH`, another checkout's lib/cli.js to run them
 * with (e.g. the previous release, for a before/after in one run). Example: `parseMemorySettings('defaults; --batch 1')`
 * → `[{ label: 'defaults', flags: [], cli: null }, { label: '--batch 1', flags: ['--batch', '1'], cli: null }]`.
 */
export function parseMemorySettings(text: string): MemorySetting[] {
  const entries = text.split(';').map((s) => s.trim());
  if (entries.every((e) => e === '')) throw new UsageError(`--settings: no settings in '${text}'`);
  return entries
    .filter((e, i) => e !== '' || i === 0)
    .map((entry) => {
      const label = entry === '' ? 'defaults' : entry;
      const words = label.split(/\s+/);
      const cli = words[0]!.startsWith('@') ? resolve(words.shift()!.slice(1)) : null;
      if (cli !== null && !existsSync(cli)) throw new UsageError(`--settings: ${cli} (from '${label}') does not exist`);
      const flags = words.length === 1 && words[0] === 'defaults' ? [] : words;
      if (flags.length > 0 && !flags[0]!.startsWith('-'))
        throw new UsageError(`--settings: '${label}' does not start with a flag (settings are generate flags, separated by ';')`);
      for (const f of flags) {
        const name = f.split('=')[0]!;
        if (BENCH_OWNED_FLAGS.has(name))
          throw new UsageError(`--settings: ${name} is set by bench generate itself for every setting (use bench generate's own flag)`);
      }
      return { label, flags, cli };
    });
}

export interface MemoryBenchOptions {
  /** model folder; undefined: the SD-layout fixture in the cache folder, made if missing */
  model: string | undefined;
  size: number;
  images: number;
  steps: number;
  guidance: number;
  scheduler: SchedulerName | undefined;
  threads: number;
  device: 'cpu' | 'cuda';
  settings: MemorySetting[];
  rssLimitBytes: number;
  pytorch: boolean;
  json: boolean;
}

export interface SettingMeasurement {
  label: string;
  flags: string[];
  /** ok; stopped: passed the RSS limit and killed by the benchmark; failed: the child failed by itself */
  status: 'ok' | 'stopped' | 'failed';
  /** why, when not ok (the child's last error line, or the signal) */
  message: string | null;
  peakRssBytes: number | null;
  aboveWeightsBytes: number | null;
  /** generate's own sampling time (the `seconds` of its --json: sessions created on first use included) */
  seconds: number | null;
  secondsPerImage: number | null;
  imagesPerSecond: number | null;
  /** the same over the first setting's */
  aboveWeightsRatio: number | null;
  timePerImageRatio: number | null;
  /** PyTorch's seconds per UNet row over this setting's (sampling time / UNet rows): > 1 is faster than PyTorch */
  speedupVsPytorch: number | null;
  /** this setting's RSS above weights over PyTorch's RSS above what it held before the call */
  aboveWeightsVsPytorch: number | null;
}

export interface MemoryBenchReport {
  /** when the run started (ISO 8601) */
  date: string;
  model: string;
  size: number;
  images: number;
  steps: number;
  scheduler: string;
  unetCallsPerImage: number;
  guidance: number;
  threads: number;
  device: string;
  rssLimitBytes: number;
  loadAverage: { start: number[]; end: number[] };
  weightsOnly: { peakRssBytes: number; imageSize: number; seconds: number | null };
  settings: SettingMeasurement[];
  pytorch: (TorchReference & { aboveBeforeCallBytes: number; secondsPerRow: number }) | { skipped: string } | null;
}

/** The child's error line: the last `time-edit: …` line the CLI printed, else its last line. */
function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.replace(/\r/g, '').trim())
    .filter((l) => l !== '');
  const errors = lines.filter((l) => l.startsWith('time-edit: '));
  return errors[errors.length - 1] ?? lines[lines.length - 1] ?? '';
}

/** `generate --json`'s `seconds`, or null. */
function generateSeconds(stdout: string): number | null {
  try {
    const j = JSON.parse(stdout) as { seconds?: unknown };
    return typeof j.seconds === 'number' ? j.seconds : null;
  } catch {
    return null;
  }
}

/** The model folder to measure: --model, or the cached fixture (made now, with a line on stderr, if missing). */
async function resolveModel(model: string | undefined): Promise<string> {
  if (model !== undefined) return resolve(model);
  const dir = defaultFixtureDir();
  if (dir === null)
    throw new UsageError(
      `no --model given and ${fixtureScript} is not here to make the SD-layout fixture (it ships with the repository): in a checkout run ` +
        '/usr/bin/python3 scripts/make-sd-layout-fixture.py DIR, then bench generate --memory --model DIR',
    );
  if (!existsSync(join(dir, 'model_index.json'))) {
    console.error(`time-edit: making the SD-layout fixture in ${dir} (scripts/make-sd-layout-fixture.py, about 30 s, once)`);
    await makeFixture(dir);
  }
  return dir;
}

/** Runs `generate` in a child with the peak-RSS reporter preloaded. */
async function runGenerateChild(
  work: string,
  name: string,
  args: string[],
  rssLimitBytes: number,
  cli: string = cliPath,
): Promise<{ child: MeasuredChild; peakRssBytes: number | null }> {
  const peakFile = join(work, `${name}.peak.json`);
  const child = await runMeasuredChild(
    process.execPath,
    ['--import', reporterUrl, cli, 'generate', ...args, '--out', join(work, name), '--json'],
    {
      rssLimitBytes,
      env: { ...process.env, TIME_EDIT_PEAK_RSS_FILE: peakFile },
    },
  );
  let peak: number | null = null;
  if (existsSync(peakFile)) {
    const j = JSON.parse(readFileSync(peakFile, 'utf8')) as { peakRssBytes?: unknown };
    if (typeof j.peakRssBytes === 'number') peak = j.peakRssBytes;
  }
  // Killed children write nothing: what /proc showed last is the peak then (a lower bound).
  return { child, peakRssBytes: peak ?? child.polledPeakRssBytes };
}

/** RSS differences below this are not measured differences (allocator and page-cache noise). */
const NOISE_BYTES = 10e6;

function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || !(b > 0) ? null : a / b;
}

/**
 * Measures every setting and returns the report (printing progress lines on stderr). Example:
 * `await measureMemory({ ...options, settings: parseMemorySettings('defaults;--batch 1') })`.
 */
export async function measureMemory(o: MemoryBenchOptions): Promise<MemoryBenchReport> {
  const start = loadavg();
  const startDate = new Date().toISOString();
  const model = await resolveModel(o.model);
  const pipeline = await loadPipeline(model, { device: o.device, threads: o.threads });
  let sizeMultiple: number;
  let callsPerImage: number;
  let vaeFactor: number;
  let schedulerName: string;
  try {
    sizeMultiple = pipeline.sizeMultiple;
    vaeFactor = pipeline.vaeScaleFactor;
    const scheduler = createScheduler(pipeline.schedulerConfig, o.steps, o.scheduler);
    callsPerImage = scheduler.timesteps.length;
    schedulerName = scheduler.name;
  } finally {
    await pipeline.close();
  }
  if (o.size % sizeMultiple !== 0) throw new UsageError(`--size must be a multiple of ${sizeMultiple} for ${model}, got ${o.size}`);
  const common = [
    '--model',
    model,
    '--threads',
    String(o.threads),
    '--device',
    o.device,
    ...(o.scheduler !== undefined ? ['--scheduler', o.scheduler] : []),
  ];
  const work = await mkdtemp(join(tmpdir(), 'time-edit-bench-memory-'));
  // Also removed when the benchmark is interrupted (measured-child.ts exits on SIGINT/SIGTERM).
  const removeWork = (): void => rmSync(work, { recursive: true, force: true });
  process.once('exit', removeWork);
  try {
    // Weights only: the smallest image the model takes, one step, no guidance; its activations are negligible.
    console.error(`bench: weights only (${sizeMultiple}×${sizeMultiple}, 1 image)…`);
    const w = await runGenerateChild(
      work,
      'weights',
      [
        MEMORY_BENCH_PROMPT,
        ...common,
        '--steps',
        '1',
        '--guidance',
        '1',
        '--seeds',
        '0',
        '--height',
        String(sizeMultiple),
        '--width',
        String(sizeMultiple),
      ],
      o.rssLimitBytes,
    );
    if (w.child.exitCode !== 0 || w.peakRssBytes === null)
      throw new ModelError(
        model,
        `bench generate: the weights-only run on ${model} failed: ${w.child.stoppedAtLimit ? 'it passed --rss-limit' : lastLine(w.child.stderr) || `signal ${w.child.signal}`}`,
      );
    const weightsRss = w.peakRssBytes;
    const rowsPerImage = o.guidance > 1 ? 2 : 1;
    const seeds = o.images === 1 ? '0' : `0-${o.images - 1}`;
    const sized = [
      MEMORY_BENCH_PROMPT,
      ...common,
      '--steps',
      String(o.steps),
      '--guidance',
      String(o.guidance),
      '--seeds',
      seeds,
      '--height',
      String(o.size),
      '--width',
      String(o.size),
    ];

    let pytorch: MemoryBenchReport['pytorch'] = null;
    if (o.pytorch) {
      console.error(`bench: PyTorch reference (one UNet call of 2 rows at ${o.size / vaeFactor}×${o.size / vaeFactor})…`);
      const t = await torchReference(model, { rows: 2, latent: o.size / vaeFactor, threads: o.threads, rssLimitBytes: o.rssLimitBytes });
      pytorch =
        'skipped' in t ? t : { ...t, aboveBeforeCallBytes: t.peakRssBytes - t.rssBeforeCallBytes, secondsPerRow: t.wallSeconds / t.rows };
    }

    const settings: SettingMeasurement[] = [];
    for (const [i, s] of o.settings.entries()) {
      console.error(`bench: setting ${i + 1}/${o.settings.length}: ${s.label}…`);
      const r = await runGenerateChild(work, `setting-${i}`, [...sized, ...s.flags], o.rssLimitBytes, s.cli ?? cliPath);
      await rm(join(work, `setting-${i}`), { recursive: true, force: true });
      const ok = r.child.exitCode === 0 && !r.child.stoppedAtLimit;
      const seconds = ok ? generateSeconds(r.child.stdout) : null;
      const status: SettingMeasurement['status'] = ok ? 'ok' : r.child.stoppedAtLimit ? 'stopped' : 'failed';
      const message = ok
        ? null
        : r.child.stoppedAtLimit
          ? `stopped above --rss-limit ${(o.rssLimitBytes / 1e9).toFixed(1)} GB`
          : r.child.signal !== null
            ? `killed by ${r.child.signal}${r.child.signal === 'SIGKILL' ? ' (out of memory?)' : ''}`
            : `exit ${r.child.exitCode}: ${lastLine(r.child.stderr)}`;
      const secondsPerImage = seconds === null ? null : seconds / o.images;
      const perRow = secondsPerImage === null ? null : secondsPerImage / (callsPerImage * rowsPerImage);
      const above = r.peakRssBytes === null ? null : r.peakRssBytes - weightsRss;
      settings.push({
        label: s.label,
        flags: s.flags,
        status,
        message,
        peakRssBytes: r.peakRssBytes,
        aboveWeightsBytes: above,
        seconds,
        secondsPerImage,
        imagesPerSecond: secondsPerImage === null ? null : 1 / secondsPerImage,
        aboveWeightsRatio: null,
        timePerImageRatio: null,
        speedupVsPytorch: pytorch !== null && !('skipped' in pytorch) ? ratio(pytorch.secondsPerRow, perRow) : null,
        aboveWeightsVsPytorch:
          pytorch !== null && !('skipped' in pytorch) && status === 'ok' ? ratio(above, pytorch.aboveBeforeCallBytes) : null,
      });
    }
    const first = settings[0]!;
    for (const s of settings) {
      // A ratio to a first setting within RSS noise of the weights (under 10 MB above them) would mean nothing.
      const firstAbove = first.status === 'ok' && (first.aboveWeightsBytes ?? 0) >= NOISE_BYTES ? first.aboveWeightsBytes : null;
      s.aboveWeightsRatio = s.status === 'ok' ? ratio(s.aboveWeightsBytes, firstAbove) : null;
      s.timePerImageRatio = ratio(s.secondsPerImage, first.secondsPerImage);
    }
    return {
      date: startDate,
      model,
      size: o.size,
      images: o.images,
      steps: o.steps,
      scheduler: schedulerName,
      unetCallsPerImage: callsPerImage,
      guidance: o.guidance,
      threads: o.threads,
      device: o.device,
      rssLimitBytes: o.rssLimitBytes,
      loadAverage: { start, end: loadavg() },
      weightsOnly: { peakRssBytes: weightsRss, imageSize: sizeMultiple, seconds: generateSeconds(w.child.stdout) },
      settings,
      pytorch,
    };
  } finally {
    process.removeListener('exit', removeWork);
    await rm(work, { recursive: true, force: true });
  }
}

// RSS differences of a few MB are page-cache and allocator noise: printed as 0, never as "-0.00".
const gb = (b: number | null): string => (b === null ? '—' : `${(Math.abs(b) < 5e6 ? 0 : b / 1e9).toFixed(2)} GB`);
const times = (r: number | null): string => (r === null ? '—' : `${r.toFixed(2)}×`);
const fixed = (v: number | null, digits: number): string => (v === null ? '—' : v.toFixed(digits));

/** The report as the table `bench generate --memory` prints (one line per setting, then the reference lines). */
export function formatMemoryReport(r: MemoryBenchReport): string {
  const la = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');
  const lines = [
    `model ${r.model}, ${r.size}×${r.size}, ${r.images} images per setting, ${r.steps} ${r.scheduler} steps (${r.unetCallsPerImage} UNet calls), guidance ${r.guidance}, ${r.threads} threads, ${r.device}`,
    `${r.date}; load average ${la(r.loadAverage.start)} at the start, ${la(r.loadAverage.end)} at the end`,
    `weights only (sessions created and run once at ${r.weightsOnly.imageSize}×${r.weightsOnly.imageSize}): peak RSS ${gb(r.weightsOnly.peakRssBytes)}`,
  ];
  const header = [
    'setting',
    'peak RSS',
    'above weights',
    's/image',
    'images/s',
    'above weights vs first',
    'time/image vs first',
    'speed vs PyTorch',
    'above weights vs PyTorch',
  ];
  const rows = r.settings.map((s) => [
    s.label,
    gb(s.peakRssBytes) + (s.status === 'stopped' ? '+' : ''),
    gb(s.aboveWeightsBytes) + (s.status === 'stopped' ? '+' : ''),
    fixed(s.secondsPerImage, 2),
    fixed(s.imagesPerSecond, 4),
    times(s.aboveWeightsRatio),
    times(s.timePerImageRatio),
    times(s.speedupVsPytorch),
    times(s.aboveWeightsVsPytorch),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const fmt = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  lines.push(fmt(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(fmt));
  for (const s of r.settings) if (s.message !== null) lines.push(`${s.label}: ${s.message}`);
  const p = r.pytorch;
  if (p === null) lines.push('PyTorch reference: not run (--no-pytorch)');
  else if ('skipped' in p) lines.push(`PyTorch reference: skipped: ${p.skipped}`);
  else
    lines.push(
      `PyTorch reference (${p.backend}, ${p.threads} threads, OMP_WAIT_POLICY=${p.ompWaitPolicy}, same UNet and weights, float32): one UNet call of ${p.rows} rows at ${p.latent}×${p.latent}: ` +
        `${p.wallSeconds.toFixed(2)} s, peak RSS ${gb(p.peakRssBytes)}, ${gb(p.aboveBeforeCallBytes)} above the ${gb(p.rssBeforeCallBytes)} it held before the call`,
    );
  return lines.join('\n');
}

/** The default --rss-limit: 40% of this machine's memory (9.6 GB of 24 GB), room for the other work sharing it. */
export function defaultRssLimitBytes(): number {
  return Math.floor(0.4 * totalmem());
}

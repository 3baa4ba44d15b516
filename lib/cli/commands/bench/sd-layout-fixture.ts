// The SD 1.x-attention-layout fixture for `bench generate --memory`: where its generator lives (a repository script,
// scripts/make-sd-layout-fixture.py, which the npm package does not ship), the cache folder a bench makes it in
// when no --model is given, and the script's PyTorch timing of the same UNet ("what PyTorch needs" per UNet call).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelError } from '../../../errors.js';
import { runMeasuredChild } from './measured-child.js';

const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
/** scripts/make-sd-layout-fixture.py of this checkout (absent from an installed package) */
export const fixtureScript = join(repoRoot, 'scripts', 'make-sd-layout-fixture.py');
/** the files whose content decides the fixture's bytes: the script and the toy model's modules it imports */
const fixtureSources = [
  'scripts/make-sd-layout-fixture.py',
  ...['nets.py', 'common.py', 'clip_bpe.py', 'world.py', 'export.py'].map((f) => `models/toy-shapes-train/${f}`),
];
/** the file the script writes into every folder it makes (how it was made) */
export const fixtureMetaFile = 'sd_layout_fixture.json';

/** The Python that runs fixture scripts: $TIME_EDIT_PYTHON, else /usr/bin/python3 (Debian's, with python3-torch). */
export function fixturePython(): string {
  const p = process.env.TIME_EDIT_PYTHON;
  return p !== undefined && p !== '' ? p : '/usr/bin/python3';
}

/**
 * The cache folder of the default fixture (width scale 0.1, seed 0), named after a hash of the generator's sources
 * so that a changed script makes a new folder: $XDG_CACHE_HOME/time-edit/sd-layout-<hash> (else ~/.cache/…).
 * null when the script is not here. Example: `defaultFixtureDir()` → `/root/.cache/time-edit/sd-layout-3f2a9c01b7de`.
 */
export function defaultFixtureDir(): string | null {
  if (!existsSync(fixtureScript)) return null;
  const hash = createHash('sha256');
  for (const rel of fixtureSources) {
    const path = join(repoRoot, rel);
    hash.update(rel).update(existsSync(path) ? readFileSync(path) : '');
  }
  const base =
    process.env.XDG_CACHE_HOME !== undefined && process.env.XDG_CACHE_HOME !== '' ? process.env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'time-edit', `sd-layout-${hash.digest('hex').slice(0, 12)}`);
}

/** Whether `dir` was made by the fixture script (its PyTorch reference can rebuild the same UNet). */
export function isFixtureFolder(dir: string): boolean {
  return existsSync(join(dir, fixtureMetaFile));
}

/** The last non-empty line of a child's stderr, for one-line messages. */
function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return lines[lines.length - 1] ?? '(no output)';
}

/**
 * Runs the fixture script to write `dir` (about 30 s); a failure is a ModelError naming `dir` and saying why.
 * Example: `await makeFixture('/tmp/sd-layout', ['--width-scale', '0.05'])`.
 */
export async function makeFixture(dir: string, extraArgs: string[] = []): Promise<void> {
  const python = fixturePython();
  const r = await runMeasuredChild(python, [fixtureScript, dir, ...extraArgs], { rssLimitBytes: Infinity }).catch((err: unknown) => {
    throw new ModelError(dir, `cannot run ${python} to make the SD-layout fixture ${dir}: ${(err as Error).message}`);
  });
  if (r.exitCode !== 0)
    throw new ModelError(
      dir,
      `${python} ${fixtureScript} ${dir} failed (${lastLine(r.stderr)})${/No module named '(torch|onnx)'/.test(r.stderr) ? '; it needs PyTorch and onnx (Debian: apt-get install python3-torch python3-onnx)' : ''}`,
    );
}

/** One PyTorch UNet call on a fixture folder's weights, as the fixture script measured it. */
export interface TorchReference {
  backend: string;
  /** OpenMP's idle-thread policy it ran with (PASSIVE unless the environment set another) */
  ompWaitPolicy: string;
  rows: number;
  latent: number;
  threads: number;
  wallSeconds: number;
  peakRssBytes: number;
  /** RSS before the call: Python, PyTorch and the weights */
  rssBeforeCallBytes: number;
}

/**
 * Times one UNet call of `rows` rows at a `latent`² latent in PyTorch (in its own process, its RSS watched as the
 * other settings' are). Returns the measurement, or a one-line reason why there is none (no PyTorch, killed, …).
 * Example: `await torchReference(dir, { rows: 2, latent: 64, threads: 2, rssLimitBytes: 9e9 })`.
 */
export async function torchReference(
  dir: string,
  o: { rows: number; latent: number; threads: number; rssLimitBytes: number },
): Promise<TorchReference | { skipped: string }> {
  if (!existsSync(fixtureScript)) return { skipped: `${fixtureScript} is not here (it ships with the repository)` };
  if (!isFixtureFolder(dir)) return { skipped: `${dir} was not made by scripts/make-sd-layout-fixture.py (no ${fixtureMetaFile})` };
  const python = fixturePython();
  const args = [
    fixtureScript,
    '--torch-reference',
    dir,
    '--rows',
    String(o.rows),
    '--latent',
    String(o.latent),
    '--threads',
    String(o.threads),
    '--json',
  ];
  let r: Awaited<ReturnType<typeof runMeasuredChild>>;
  try {
    r = await runMeasuredChild(python, args, { rssLimitBytes: o.rssLimitBytes });
  } catch (err) {
    return { skipped: `cannot run ${python}: ${(err as Error).message}` };
  }
  if (r.stoppedAtLimit) return { skipped: `PyTorch passed the RSS limit (${(o.rssLimitBytes / 1e9).toFixed(1)} GB) and was stopped` };
  if (r.exitCode !== 0) {
    if (/No module named 'torch'/.test(r.stderr)) return { skipped: `${python} has no PyTorch (Debian: apt-get install python3-torch)` };
    return { skipped: `${python} --torch-reference failed: ${lastLine(r.stderr)}` };
  }
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { skipped: `${python} --torch-reference printed no JSON line` };
  }
  const num = (k: string): number => (typeof j[k] === 'number' ? (j[k] as number) : Number.NaN);
  return {
    backend: String(j.backend),
    ompWaitPolicy: String(j.omp_wait_policy),
    rows: num('rows'),
    latent: num('latent'),
    threads: num('threads'),
    wallSeconds: num('wall_s'),
    peakRssBytes: num('peak_rss_bytes'),
    rssBeforeCallBytes: num('rss_before_call_bytes'),
  };
}

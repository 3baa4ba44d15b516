// Test helper of the queue tests: a private redis-server (Debian's) on a free loopback port in a temporary folder,
// started and stopped by the test, and `time-edit worker` processes on it. Nothing listens beyond 127.0.0.1.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CLI = join(import.meta.dirname, '..', 'lib', 'cli.js');

/** True when redis-server is installed (the queue tests are skipped, saying so, when it is not). */
export const haveRedis = spawnSync('redis-server', ['--version']).status === 0;

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts redis-server on 127.0.0.1 in a temporary folder; `appendonly` turns on append-only persistence (fsync on every
 * write, so that a restart loses nothing), `password` sets requirepass. Returns { url, port, stop(), restart() }.
 */
export async function startRedis({ appendonly = false, password } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-redis-'));
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--daemonize', 'no', '--protected-mode', 'yes'];
  if (appendonly) args.push('--appendonly', 'yes', '--appendfsync', 'always');
  if (password !== undefined) args.push('--requirepass', password);
  let proc;
  const launch = async () => {
    proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
    });
    for (let i = 0; i < 200; i++) {
      if (/Ready to accept connections/.test(out)) return;
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${out}`);
      await sleep(25);
    }
    throw new Error(`redis-server did not start: ${out}`);
  };
  const halt = async () => {
    if (proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  };
  await launch();
  const auth = password === undefined ? '' : `:${encodeURIComponent(password)}@`;
  return {
    port,
    url: `redis://${auth}127.0.0.1:${port}`,
    /** stops the server (SIGTERM: it writes its append-only file) */
    halt,
    /** starts it again on the same port and folder */
    launch,
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts `time-edit worker` on `url` with extra CLI args; resolves once it serves (its "serving" line), with
 * { proc, log(), stop() } (stop: SIGTERM and wait for the exit code).
 */
export async function startWorker(url, args = [], env = {}) {
  const proc = spawn(process.execPath, [CLI, 'worker', '--queue', url, '--stall-timeout', '10', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  proc.stderr.on('data', (d) => {
    log += d;
  });
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  for (let i = 0; i < 1200 && !/serving /.test(log); i++) {
    if (proc.exitCode !== null) throw new Error(`worker exited: ${log}`);
    await sleep(25);
  }
  if (!/serving /.test(log)) throw new Error(`worker did not start: ${log}`);
  return {
    proc,
    exited,
    log: () => log,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** Runs the CLI to completion: { code, stdout, stderr }. */
export function runCli(args, env = {}) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('exit', (code) => resolve({ code, stdout, stderr, proc: p }));
  });
}

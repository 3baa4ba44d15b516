// One child process of a memory benchmark, run to its end with its output collected and its memory watched: on
// Linux /proc/<pid>/status is read every 100 ms, and a child whose resident set passes the limit is killed (the
// row then says so) instead of taking the shared machine into the kernel's out-of-memory killer. An interrupted
// benchmark (SIGINT, SIGTERM) kills its running child before it exits.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Children still running: killed if this process is interrupted, so no multi-GB run is left orphaned. */
const live = new Set<ChildProcess>();
let signalHandlersInstalled = false;

function killChildrenOnSignals(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      for (const c of live) c.kill('SIGKILL');
      process.exit(code); // 'exit' listeners (the benchmark's temp-folder cleanup) still run
    });
  }
}

export interface MeasuredChildOptions {
  /** kill the child once its resident set (VmRSS) passes this many bytes; Infinity: never */
  rssLimitBytes: number;
  env?: NodeJS.ProcessEnv;
  /** how often /proc is read, in milliseconds (default 100) */
  pollMs?: number;
}

export interface MeasuredChild {
  /** the exit code, or null when a signal ended the child */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** the largest VmHWM (peak resident set) read from /proc while it ran; null where /proc cannot tell */
  polledPeakRssBytes: number | null;
  /** true when this function killed the child for passing rssLimitBytes */
  stoppedAtLimit: boolean;
  wallMs: number;
}

/** VmRSS and VmHWM of a live process in bytes, or null (no /proc, or the process is gone). */
function readProcMemory(pid: number): { rss: number; hwm: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kb = (key: string): number | null => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m === null ? null : Number(m[1]) * 1024;
  };
  const rss = kb('VmRSS');
  const hwm = kb('VmHWM');
  return rss === null || hwm === null ? null : { rss, hwm };
}

/**
 * Runs `command args` to its end (stdin closed) and reports how it ended, its output and its polled peak RSS.
 * Example: `const r = await runMeasuredChild(process.execPath, ['-e', '1'], { rssLimitBytes: 8e9 })` →
 * `r.exitCode === 0`, `r.stoppedAtLimit === false`.
 */
export function runMeasuredChild(command: string, args: string[], opts: MeasuredChildOptions): Promise<MeasuredChild> {
  return new Promise((resolvePromise, reject) => {
    const t0 = performance.now();
    killChildrenOnSignals();
    const child = spawn(command, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let polledPeak: number | null = null;
    let stoppedAtLimit = false;
    const poll = (): void => {
      if (child.pid === undefined) return;
      const mem = readProcMemory(child.pid);
      if (mem === null) return;
      polledPeak = Math.max(polledPeak ?? 0, mem.hwm);
      if (mem.rss > opts.rssLimitBytes && !stoppedAtLimit) {
        stoppedAtLimit = true;
        child.kill('SIGKILL');
      }
    };
    const timer = setInterval(poll, opts.pollMs ?? 100);
    child.on('error', (e) => {
      live.delete(child);
      clearInterval(timer);
      reject(e);
    });
    child.on('close', (exitCode, signal) => {
      live.delete(child);
      clearInterval(timer);
      resolvePromise({
        exitCode,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        polledPeakRssBytes: polledPeak,
        stoppedAtLimit,
        wallMs: performance.now() - t0,
      });
    });
  });
}

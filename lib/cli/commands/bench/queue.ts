// `time-edit bench queue`: what the queue costs and gains, measured in one run on this machine with the embedded
// model. (1) Overhead: `edit --batch` of --lines toy lines locally and through the queue with one worker, same file;
// the difference per job (a job is a chunk of 32 lines) and as a share of the queue run's wall time. (2) Scaling:
// `generate` of --images images with 1 and then 2 workers, each with --threads 1: throughput ratio. (3) Memory: one
// worker's RSS (from its heartbeat) over --rss-jobs one-line edit jobs: the first sample after warm-up vs the last.
// Without --queue, a private redis-server (Debian's) is started on a free loopback port in a temporary folder.
// Workers are `time-edit worker` processes. The load average is printed beside the numbers: other processes share
// the CPU, and the ratios of the same run are what count.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helpRequested, parseCommandLine } from '../../flags.js';
import { parsePositiveInt } from '../../sampling-flags.js';
import { runBatch } from '../../../edit/batch.js';
import { openEditContext } from '../../../edit/context.js';
import { loadPipeline } from '../../../model/pipeline.js';
import { runBatchOnQueue } from '../../../queue/batch.js';
import { generateOnQueue } from '../../../queue/generate.js';
import { queueStatus } from '../../../queue/status.js';
import { resolveQueueUrl } from '../../../queue/connection.js';

const usage = `usage: time-edit bench queue [--queue URL] [--lines 3000] [--images 32] [--steps 20] [--rss-jobs 10000] [--json]

  --queue URL     a Redis server to use (default: a private redis-server on a free 127.0.0.1 port, stopped after)
  --lines N       edit --batch lines for the overhead (default 3000; 32 lines per job)
  --images N      generate images for the 1 vs 2 workers scaling (default 32; 4 prompts, --threads 1 workers)
  --steps N       sampling steps of those images (default 20)
  --rss-jobs N    one-line edit jobs over which a worker's RSS is followed (default 10000; 0 skips it)
  --json          print the numbers as JSON

Targets: overhead ≤ 5 ms per job and ≤ 3% of the wall time; 2 workers ≥ 1.7× the throughput of 1; RSS flat (±10%).
example: time-edit bench queue --lines 300 --images 8 --rss-jobs 200`;

const CLI = fileURLToPath(new URL('../../../cli.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

/** A private redis-server in a temporary folder; its URL and a stop function. */
async function privateRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-bench-redis-'));
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', ''], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let out = '';
  proc.stdout?.on('data', (d) => {
    out += String(d);
  });
  proc.on('error', () => {});
  for (let i = 0; i < 200 && !/Ready to accept/.test(out); i++) {
    if (proc.exitCode !== null) break;
    await sleep(25);
  }
  if (!/Ready to accept/.test(out))
    throw new Error(`could not start redis-server (apt-get install redis-server, or give --queue URL): ${out.slice(-300)}`);
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A `time-edit worker` process, resolved once it serves. */
async function startWorker(url: string, args: string[]): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [CLI, 'worker', '--queue', url, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr?.on('data', (d) => {
    log += String(d);
  });
  for (let i = 0; i < 2400 && !/serving /.test(log); i++) {
    if (proc.exitCode !== null) throw new Error(`a worker exited: ${log}`);
    await sleep(25);
  }
  return proc;
}

async function stopWorker(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await exited;
}

function batchFile(dir: string, n: number, name: string, plain = false): string {
  const shapes = ['circle', 'square', 'triangle', 'star'];
  const colours = ['purple', 'blue', 'green', 'yellow', 'red'];
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const s = shapes[i % 4]!;
    const line: Record<string, unknown> = {
      source: `a ${s}`,
      destination: `a ${colours[Math.floor(i / 4) % 5]} ${s}`,
      lambda: 0.1 + (i % 97) * 0.01,
    };
    if (plain) line.augmentations = false;
    lines.push(JSON.stringify(line));
  }
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
const quiet = { onProgress: undefined, onLog: () => {} };

export async function run(args: string[]): Promise<void> {
  const { values: v } = parseCommandLine(
    {
      args,
      options: {
        queue: { type: 'string' },
        lines: { type: 'string' },
        images: { type: 'string' },
        steps: { type: 'string' },
        'rss-jobs': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  if (helpRequested(v, usage)) return;
  const lines = parsePositiveInt(v.lines, '--lines', 3000, 1_000_000);
  const images = parsePositiveInt(v.images, '--images', 32, 10_000);
  const steps = parsePositiveInt(v.steps, '--steps', 20);
  const rssJobs = v['rss-jobs'] === '0' ? 0 : parsePositiveInt(v['rss-jobs'], '--rss-jobs', 10_000, 1_000_000);
  const redis = v.queue === undefined ? await privateRedis() : { url: resolveQueueUrl(v.queue), stop: async () => {} };
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-bench-queue-'));
  const say = (m: string) => {
    if (v.json !== true) console.error(m);
  };
  const workers: ChildProcess[] = [];
  const result: Record<string, unknown> = { loadBefore: load() };
  try {
    // (1) Overhead of edit --batch through the queue with one worker.
    const file = batchFile(dir, lines, 'overhead.jsonl');
    say(`overhead: edit --batch of ${lines} lines, locally…`);
    let t = performance.now();
    await runBatch(file, join(dir, 'local'), {});
    const localS = (performance.now() - t) / 1000;
    workers.push(await startWorker(redis.url, []));
    say('… and through the queue with one worker');
    t = performance.now();
    await runBatchOnQueue({ url: redis.url, ...quiet }, file, join(dir, 'queued'), {});
    const queueS = (performance.now() - t) / 1000;
    const jobs = Math.ceil(lines / 32);
    const perJobMs = ((queueS - localS) * 1000) / jobs;
    result.overhead = { lines, jobs, localS, queueS, perJobMs, share: (queueS - localS) / queueS, load: load() };
    say(
      `  local ${localS.toFixed(2)} s, queue ${queueS.toFixed(2)} s: ${perJobMs.toFixed(2)} ms per job (${jobs} jobs), ${(100 * ((queueS - localS) / queueS)).toFixed(1)}% of the wall time; load ${load()}`,
    );
    await stopWorker(workers.pop()!);

    // (2) Scaling of generate, 1 vs 2 workers with --threads 1.
    const pipeline = await loadPipeline(undefined, { threads: 1 });
    const { fingerprint } = await openEditContext(pipeline);
    const prompts = ['a circle', 'a red square', 'a blue triangle', 'a green star'];
    const perPrompt = Math.max(1, Math.ceil(images / prompts.length));
    const throughput = async (n: number, seed0: number): Promise<number> => {
      for (let i = workers.length; i < n; i++) workers.push(await startWorker(redis.url, ['--threads', '1']));
      const options = {
        prompts,
        seeds: Array.from({ length: perPrompt }, (_, i) => seed0 + i),
        steps,
        guidance: 7.5,
        height: pipeline.defaultSize,
        width: pipeline.defaultSize,
        batchSize: Math.min(8, perPrompt),
      };
      const t0 = performance.now();
      const q = await generateOnQueue({ url: redis.url, ...quiet }, pipeline, fingerprint, options);
      const s = (performance.now() - t0) / 1000;
      await q.release();
      return q.images.length / s;
    };
    say(`scaling: generate ${prompts.length * perPrompt} images (${steps} steps), 1 worker then 2, --threads 1`);
    const one = await throughput(1, 0);
    const two = await throughput(2, 1000);
    await pipeline.close();
    result.scaling = { images: prompts.length * perPrompt, steps, oneWorker: one, twoWorkers: two, ratio: two / one, load: load() };
    say(`  1 worker ${one.toFixed(2)} images/s, 2 workers ${two.toFixed(2)} images/s: ${(two / one).toFixed(2)}×; load ${load()}`);
    while (workers.length > 0) await stopWorker(workers.pop()!);

    // (3) A worker's RSS over many small jobs.
    if (rssJobs > 0) {
      say(`memory: one worker, ${rssJobs} one-line edit jobs`);
      workers.push(await startWorker(redis.url, []));
      const rssFile = batchFile(dir, rssJobs, 'rss.jsonl', true);
      const samples: { jobs: number; rssMB: number }[] = [];
      let running = true;
      const sampler = (async () => {
        while (running) {
          const w = (await queueStatus(redis.url)).workers[0];
          if (w !== undefined) samples.push({ jobs: w.jobs, rssMB: w.rssBytes / 1e6 });
          await sleep(3000);
        }
      })();
      await runBatchOnQueue({ url: redis.url, ...quiet }, rssFile, join(dir, 'rss'), { chunk: 1 });
      running = false;
      await sampler;
      await sleep(3500); // one more heartbeat after the last job
      const last = (await queueStatus(redis.url)).workers[0];
      if (last !== undefined) samples.push({ jobs: last.jobs, rssMB: last.rssBytes / 1e6 });
      const warm = samples.find((s) => s.jobs >= Math.min(500, rssJobs / 10)) ?? samples[0];
      const end = samples.at(-1);
      const peak = Math.max(...samples.filter((s) => s.jobs >= (warm?.jobs ?? 0)).map((s) => s.rssMB));
      result.memory = {
        jobs: rssJobs,
        warm,
        end,
        peakMB: peak,
        change: warm && end ? end.rssMB / warm.rssMB - 1 : null,
        samples: samples.length,
        load: load(),
      };
      say(
        `  RSS after ${warm?.jobs} jobs ${warm?.rssMB.toFixed(0)} MB, after ${end?.jobs} jobs ${end?.rssMB.toFixed(0)} MB (${(100 * ((end?.rssMB ?? 0) / (warm?.rssMB ?? 1) - 1)).toFixed(1)}%), peak ${peak.toFixed(0)} MB; load ${load()}`,
      );
    }
    if (v.json === true) console.log(JSON.stringify(result, null, 2));
  } finally {
    for (const w of workers) await stopWorker(w);
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// `time-edit bench queue`: what the queue costs and gains, measured in one run on this machine with the embedded
// model. (1) Overhead: `edit --batch` of --lines toy lines locally and through the queue with one warm worker, same
// file, in --rounds rounds of alternating order (local, queue, then queue, local, …) so that a load that drifts
// during the run weighs on both alike; overhead = (sum of queue times − sum of local times) / rounds, per job (a job
// is a chunk of 32 lines, the local run's chunk) and as a share of the queue's wall time. Both write the same files
// the same way (lib/edit/batch.ts BatchRun.write: each chunk's files fsynced together, one fsync of its rows); the
// local run's time includes its model load, the queue run's the submitter's (it reads the model's fingerprint), not
// the worker's (a worker is long-lived: started once, before the first round). From the jobs' time stamps it also
// says where the queue's time goes. (2) Scaling: `generate` of --images images with 1 and then 2 workers, each with
// --threads 1: throughput ratio. (3) Memory: one worker's RSS (from its heartbeat) over --rss-jobs one-line edit jobs:
// every sample after warm-up against the first one. Without --queue, a private redis-server (Debian's) is started on
// a free loopback port in a temporary folder. Workers are `time-edit worker` processes. The load average is printed
// beside the numbers: other processes share the CPU, and the ratios of the same run are what count.
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
import { openConnection, resolveQueueUrl } from '../../../queue/connection.js';
import type { JobTimes } from '../../../queue/submission.js';
import { liveWorkers } from '../../../queue/worker-registry.js';

const usage = `usage: time-edit bench queue [--queue URL] [--lines 3000] [--rounds 2] [--images 32] [--steps 20] [--rss-jobs 10000] [--json]

  --queue URL     a Redis server to use (default: a private redis-server on a free 127.0.0.1 port, stopped after)
  --lines N       edit --batch lines for the overhead (default 3000; 32 lines per job)
  --rounds N      local and queue runs of those lines, in alternating order (default 2: local, queue, queue, local)
  --images N      generate images for the 1 vs 2 workers scaling (default 32; 4 prompts, --threads 1 workers)
  --steps N       sampling steps of those images (default 20)
  --rss-jobs N    one-line edit jobs over which a worker's RSS is followed (default 10000; 0 skips it)
  --json          print the numbers as JSON

Targets: overhead ≤ 5 ms per job and ≤ 3% of the wall time; 2 workers ≥ 1.7× the throughput of 1; RSS flat (±10%).
example: time-edit bench queue --lines 300 --rounds 1 --images 8 --rss-jobs 200`;

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
const mean = (xs: readonly number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
const ms = (x: number) => `${x.toFixed(1)} ms`;

/** A local `edit --batch` run: its wall time and its phases (model load and setup, per chunk, finish). */
async function localRun(file: string, out: string) {
  const t0 = performance.now();
  const marks: number[] = [];
  await runBatch(file, out, { onProgress: () => marks.push(performance.now()) });
  const end = performance.now();
  const chunks = marks.slice(1).map((t, i) => t - marks[i]!);
  return { seconds: (end - t0) / 1000, startMs: (marks[0] ?? end) - t0, perChunkMs: mean(chunks), finishMs: end - (marks.at(-1) ?? end) };
}

/** A queue `edit --batch` run: its wall time and, from the jobs' time stamps, where the time went. */
async function queueRun(url: string, file: string, out: string) {
  const times: JobTimes[] = [];
  const t0 = Date.now();
  const p0 = performance.now();
  await runBatchOnQueue({ url, ...quiet, onJobTimes: (t) => times.push(t) }, file, out, {});
  const seconds = (performance.now() - p0) / 1000;
  const end = t0 + seconds * 1000;
  const byTake = times.filter((t) => t.taken !== undefined && t.finished !== undefined).sort((a, b) => a.taken! - b.taken!);
  return {
    seconds,
    /** start → the first job taken by the worker: the submitter's model load (for the fingerprint), connecting, adding */
    startMs: (byTake[0]?.taken ?? end) - t0,
    /** a job on the worker: validate, compute, store its artifacts (one MULTI) */
    workerPerJobMs: mean(byTake.map((t) => t.finished! - t.taken!)),
    /** the worker between two jobs: complete one, take the next */
    workerGapMs: mean(byTake.slice(1).map((t, i) => t.taken! - byTake[i]!.finished!)),
    /** a job's completion → the submitter has read it (event wake-up, reading the job) */
    latencyMs: mean(times.filter((t) => t.finished !== undefined).map((t) => t.seen - t.finished!)),
    /** the submitter's read of the artifacts (one MGET) and its durable write, overlapping the worker's next job */
    handleMs: mean(times.map((t) => t.handled - t.seen)),
    /** the last write → the end (removing the last job, rewriting results.jsonl, closing) */
    finishMs: end - Math.max(...times.map((t) => t.handled)),
  };
}

export async function run(args: string[]): Promise<void> {
  const { values: v } = parseCommandLine(
    {
      args,
      options: {
        queue: { type: 'string' },
        lines: { type: 'string' },
        rounds: { type: 'string' },
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
  const rounds = parsePositiveInt(v.rounds, '--rounds', 2, 100);
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
    // (1) Overhead of edit --batch through the queue with one warm worker, rounds in alternating order.
    const file = batchFile(dir, lines, 'overhead.jsonl');
    const jobs = Math.ceil(lines / 32);
    workers.push(await startWorker(redis.url, []));
    const order = Array.from({ length: rounds }, (_, r) => (r % 2 === 0 ? ['local', 'queue'] : ['queue', 'local'])).flat();
    say(`overhead: edit --batch of ${lines} lines (${jobs} jobs of 32 lines), one warm worker; ${rounds} round(s): ${order.join(', ')}`);
    const locals: Awaited<ReturnType<typeof localRun>>[] = [];
    const queued: Awaited<ReturnType<typeof queueRun>>[] = [];
    // Warm-up, not timed: a short run of each, so that neither timed run pays this process's one-time costs (loading
    // onnxruntime's library, compiling the JavaScript of its path) and the worker has served a job.
    const warmFile = batchFile(dir, 64, 'warm-up.jsonl');
    await localRun(warmFile, join(dir, 'warm-local'));
    await queueRun(redis.url, warmFile, join(dir, 'warm-queue'));
    for (const [i, kind] of order.entries()) {
      const out = join(dir, `${kind}-${i}`);
      if (kind === 'local') locals.push(await localRun(file, out));
      else queued.push(await queueRun(redis.url, file, out));
      say(`  ${kind} ${(kind === 'local' ? locals.at(-1)! : queued.at(-1)!).seconds.toFixed(2)} s; load ${load()}`);
      rmSync(out, { recursive: true, force: true });
    }
    await stopWorker(workers.pop()!);
    const localS = locals.reduce((a, r) => a + r.seconds, 0);
    const queueS = queued.reduce((a, r) => a + r.seconds, 0);
    const perJobMs = ((queueS - localS) * 1000) / (rounds * jobs);
    const share = (queueS - localS) / queueS;
    const phases = {
      local: {
        startMs: mean(locals.map((r) => r.startMs)),
        perChunkMs: mean(locals.map((r) => r.perChunkMs)),
        finishMs: mean(locals.map((r) => r.finishMs)),
      },
      queue: Object.fromEntries(
        (['startMs', 'workerPerJobMs', 'workerGapMs', 'latencyMs', 'handleMs', 'finishMs'] as const).map((k) => [
          k,
          mean(queued.map((r) => r[k])),
        ]),
      ),
    };
    result.overhead = {
      lines,
      jobs,
      rounds,
      order,
      localS: locals.map((r) => r.seconds),
      queueS: queued.map((r) => r.seconds),
      perJobMs,
      share,
      phases,
      load: load(),
    };
    const q = phases.queue as Record<string, number>;
    say(
      `  local ${localS.toFixed(2)} s, queue ${queueS.toFixed(2)} s in all: (queue − local) / (${rounds} × ${jobs} jobs) = ${perJobMs.toFixed(2)} ms per job, ${(100 * share).toFixed(1)}% of the queue's wall time (targets ≤ 5 ms, ≤ 3%); load ${load()}`,
    );
    say(
      `  where the time goes (means): start → first chunk: local ${ms(phases.local.startMs)}, queue ${ms(q.startMs!)} (to the first job taken); ` +
        `per chunk: local ${ms(phases.local.perChunkMs)} (compute + write), worker ${ms(q.workerPerJobMs!)} (compute + store) + ${ms(q.workerGapMs!)} between jobs; ` +
        `submitter: completion → read ${ms(q.latencyMs!)}, read + write ${ms(q.handleMs!)} (overlapping the worker's next job); ` +
        `last chunk → end: local ${ms(phases.local.finishMs)}, queue ${ms(q.finishMs!)}`,
    );

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

    // (3) A worker's RSS over many small jobs, read from its heartbeat every 3 s.
    if (rssJobs > 0) {
      say(`memory: one worker, ${rssJobs} one-line edit jobs`);
      workers.push(await startWorker(redis.url, []));
      const rssFile = batchFile(dir, rssJobs, 'rss.jsonl', true);
      const samples: { jobs: number; rssMB: number; load: number }[] = [];
      const conn = openConnection(redis.url);
      const sample = async () => {
        const w = (await liveWorkers(conn))[0];
        if (w !== undefined) samples.push({ jobs: w.jobs, rssMB: w.rssBytes / 1e6, load: loadavg()[0]! });
      };
      let running = true;
      const sampler = (async () => {
        while (running) {
          await sample();
          await sleep(3000);
        }
      })();
      const t0 = performance.now();
      await runBatchOnQueue({ url: redis.url, ...quiet }, rssFile, join(dir, 'rss'), { chunk: 1 });
      const rssSeconds = (performance.now() - t0) / 1000;
      running = false;
      await sampler;
      await sleep(3500); // one more heartbeat after the last job
      await sample();
      conn.disconnect();
      const warm = samples.find((s) => s.jobs >= Math.min(500, rssJobs / 10)) ?? samples[0];
      const after = samples.filter((s) => s.jobs >= (warm?.jobs ?? 0));
      const end = samples.at(-1);
      const peak = Math.max(...after.map((s) => s.rssMB));
      const low = Math.min(...after.map((s) => s.rssMB));
      const rel = (x: number) => (warm ? x / warm.rssMB - 1 : Number.NaN);
      const loads = samples.map((s) => s.load);
      result.memory = {
        jobs: rssJobs,
        seconds: rssSeconds,
        warm,
        end,
        peakMB: peak,
        lowMB: low,
        change: end ? rel(end.rssMB) : null,
        range: [rel(low), rel(peak)],
        samples,
        load: `${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}`,
      };
      const pct = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
      say(
        `  ${rssJobs} jobs in ${rssSeconds.toFixed(0)} s; RSS after ${warm?.jobs} jobs ${warm?.rssMB.toFixed(0)} MB, after ${end?.jobs} jobs ${end?.rssMB.toFixed(0)} MB (${pct(rel(end?.rssMB ?? 0))}); ` +
          `every later sample (${after.length}) within ${low.toFixed(0)}–${peak.toFixed(0)} MB (${pct(rel(low))} … ${pct(rel(peak))}); load ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}`,
      );
    }
    if (v.json === true) console.log(JSON.stringify(result, null, 2));
  } finally {
    for (const w of workers) await stopWorker(w);
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// `time-edit worker`: serves the models it is started with to the queue (lib/queue/worker.ts) until SIGTERM or
// SIGINT, which let the current job finish and then exit 0. Events (start, failed jobs, connection trouble) go to
// stderr, one line each, the queue URL always redacted.
import { helpRequested, parseCommandLine } from '../flags.js';
import { UsageError } from '../errors.js';
import { parseDevice, parsePositiveInt } from '../sampling-flags.js';
import { REDIS_URL_VARIABLE } from '../../queue/connection.js';
import { queueUrlFlag } from './queue.js';
import { startQueueWorker } from '../../queue/worker.js';
import { resolve } from 'node:path';

export const summary = 'queue worker: serve --model PATH… to the Redis queue of edit --batch / eval timed / generate --queue';

/** This command's flags for the library options it sets. */
export const optionFlags = { device: '--device', threads: '--threads' };

const usage = `usage: time-edit worker [--queue URL] [--model PATH …] [options]

  --queue URL          redis://[:password@]host:port[/db] or rediss:// (TLS); default, or with "env": $${REDIS_URL_VARIABLE}
  --model PATH         an SD 1.x ONNX folder to serve (repeatable; default: the embedded toy-shapes model); each is
                       loaded once and kept warm; jobs for other models are left for the workers that serve them
  --device cpu|cuda    execution provider (default cpu)
  --threads N          onnxruntime threads per session
  --concurrency N      jobs run at once per model (default 1)
  --stall-timeout S    a job whose worker stops renewing its lock for S seconds (a killed worker) goes back to
                       the queue for another worker (default 30)

SIGTERM or SIGINT: the current job is finished, then the worker exits 0.
example: time-edit worker --queue redis://127.0.0.1:6379 --model models/toy-shapes`;

export async function run(args: string[]): Promise<void> {
  const { values: v } = parseCommandLine(
    {
      args,
      options: {
        queue: { type: 'string' },
        model: { type: 'string', multiple: true },
        device: { type: 'string' },
        threads: { type: 'string' },
        concurrency: { type: 'string' },
        'stall-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  if (helpRequested(v, usage)) return;
  const url = queueUrlFlag(v.queue);
  const device = parseDevice(v.device);
  const threads = v.threads === undefined ? undefined : parsePositiveInt(v.threads, '--threads', 1);
  const concurrency = parsePositiveInt(v.concurrency, '--concurrency', 1, 64);
  const stall = v['stall-timeout'] === undefined ? 30 : Number(v['stall-timeout']);
  if (!(Number.isFinite(stall) && stall >= 1 && stall <= 3600))
    throw new UsageError(`--stall-timeout must be a number of seconds in [1, 3600], got '${v['stall-timeout']}'`);
  const log = (m: string) => console.error(`time-edit worker: ${new Date().toISOString()} ${m}`);
  const worker = await startQueueWorker({
    url,
    models: v.model?.map((m) => resolve(m)),
    device,
    threads,
    concurrency,
    stallMs: stall * 1000,
    onLog: log,
  });
  const stop = (signal: string) => {
    log(`${signal}: finishing the current job, then exiting`);
    void worker.close();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await worker.stopped;
  log('stopped');
}

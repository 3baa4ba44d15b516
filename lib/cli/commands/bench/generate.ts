// `time-edit bench generate`: images/s of the sampling loop (the measured setting: embedded model, 64×64, 50 PNDM steps,
// guidance 7.5, batch 8, cond+uncond in one UNet call) and the share of time spent outside onnxruntime; with
// --memory (or --settings), the peak-RSS table of memory-bench.ts instead (one child process per setting).
import { helpRequested, parseCommandLine } from '../../flags.js';
import { loadPipeline } from '../../../model/pipeline.js';
import { generate } from '../../../sample/generate.js';
import { parseDevice, parseNumber, parsePositiveInt, parseScheduler, SAMPLING_OPTION_FLAGS } from '../../sampling-flags.js';
import { UsageError } from '../../errors.js';

/** This benchmark's flags for the library options it sets (--size sets both sides), for the library's messages. */
export const optionFlags = { ...SAMPLING_OPTION_FLAGS, height: '--size', width: '--size', batchSize: '--batch' };

const usage = `usage: time-edit bench generate [--model PATH] [--batch 8] [--steps 50] [--guidance 7.5] [--size 64]
                               [--scheduler pndm] [--threads 2] [--runs 1] [--device cpu|cuda] [--spinning] [--json]

Times one warm-up run (2 steps) then --runs runs of --batch images (seeds 0…batch-1, one prompt) and prints
images/s, the time inside onnxruntime's session.run, the worker's dtype conversions, the thread hop and the
JavaScript outside onnxruntime (scheduler, guidance, noise, RGB conversion) as a share of the total.
--spinning lets onnxruntime's idle threads busy-wait (its default; off otherwise) for comparison.

Memory: time-edit bench generate --memory [--model PATH] [--size 512] [--images 2] [--steps 4] [--guidance 7.5]
                               [--settings=SETTINGS] [--rss-limit GB] [--no-pytorch] [--threads 2] [--json]
runs \`generate\` once per setting, each in its own process (a setting: generate flags, settings separated by ';',
default '--attention-slices 1 --batch 1;defaults;--attention-slices 16 --batch 1'),
on --images images (seeds 0…) of one prompt at --size², and prints each one's peak RSS, RSS above the weights
(a weights-only run: sessions created, one image at the smallest size), s/image, images/s, ratios to the first
setting and, on a folder made by scripts/make-sd-layout-fixture.py, to PyTorch's time and memory for one UNet call
of the same UNet. Without --model the SD-layout fixture is made in ~/.cache/time-edit/ (once, ~30 s). A setting
whose RSS passes --rss-limit (default 40% of this machine's memory) is stopped and reported as such.`;

/** The flags only the in-process benchmark has, and those only --memory has. */
const SPEED_ONLY = ['batch', 'runs', 'spinning'] as const;
const MEMORY_ONLY = ['images', 'settings', 'rss-limit', 'no-pytorch'] as const;

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      options: {
        model: { type: 'string' },
        batch: { type: 'string' },
        steps: { type: 'string' },
        guidance: { type: 'string' },
        size: { type: 'string' },
        scheduler: { type: 'string' },
        threads: { type: 'string' },
        runs: { type: 'string' },
        device: { type: 'string' },
        json: { type: 'boolean' },
        spinning: { type: 'boolean' },
        memory: { type: 'boolean' },
        images: { type: 'string' },
        settings: { type: 'string' },
        'rss-limit': { type: 'string' },
        'no-pytorch': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  if (v.memory === true || v.settings !== undefined) {
    for (const f of SPEED_ONLY)
      if (v[f] !== undefined)
        throw new UsageError(`--${f} has no meaning with --memory${f === 'batch' ? " (put it in a setting: --settings '--batch 2')" : ''}`);
    const m = await import('./memory-bench.js');
    const report = await m.measureMemory({
      model: v.model,
      size: parsePositiveInt(v.size, '--size', 512),
      images: parsePositiveInt(v.images, '--images', 2, 1000),
      steps: parsePositiveInt(v.steps, '--steps', 4),
      guidance: parseNumber(v.guidance, '--guidance', 7.5, 0),
      scheduler: parseScheduler(v.scheduler),
      threads: parsePositiveInt(v.threads, '--threads', 2),
      device: parseDevice(v.device),
      settings: m.parseMemorySettings(v.settings ?? m.DEFAULT_MEMORY_SETTINGS.join(';')),
      rssLimitBytes:
        v['rss-limit'] === undefined ? m.defaultRssLimitBytes() : parseNumber(v['rss-limit'], '--rss-limit', 0, 0.1, 1e6) * 1e9,
      pytorch: v['no-pytorch'] !== true,
      json: v.json === true,
    });
    console.log(v.json === true ? JSON.stringify(report, null, 2) : m.formatMemoryReport(report));
    return;
  }
  for (const f of MEMORY_ONLY) if (v[f] !== undefined) throw new UsageError(`--${f} needs --memory`);
  const batch = parsePositiveInt(v.batch, '--batch', 8);
  const steps = parsePositiveInt(v.steps, '--steps', 50);
  const guidance = parseNumber(v.guidance, '--guidance', 7.5, 0);
  const size = parsePositiveInt(v.size, '--size', 64);
  const threads = parsePositiveInt(v.threads, '--threads', 2);
  const runs = parsePositiveInt(v.runs, '--runs', 1);
  const scheduler = parseScheduler(v.scheduler ?? 'pndm');
  const device = parseDevice(v.device);
  const tLoad = performance.now();
  const spinning = v.spinning === true;
  const pipeline = await loadPipeline(v.model, { device, threads, spinning });
  const loadMs = performance.now() - tLoad;
  try {
    const seeds = Array.from({ length: batch }, (_, i) => i);
    const opts = { prompts: ['a red circle'], seeds, guidance, height: size, width: size, scheduler, batchSize: batch };
    await generate(pipeline, { ...opts, steps: 2 });
    const results = [];
    for (let r = 0; r < runs; r++) {
      const before = pipeline.stats;
      const t0 = performance.now();
      let calls = 0;
      await generate(pipeline, { ...opts, steps, onProgress: (d) => (calls = d) });
      const totalMs = performance.now() - t0;
      const after = pipeline.stats;
      const ortMs = after.ortMs - before.ortMs;
      const workerMs = after.workerMs - before.workerMs;
      const hopMs = after.roundTripMs - before.roundTripMs - ortMs - workerMs;
      results.push({
        images: batch,
        unetCalls: calls,
        unetRows: guidance > 1 ? 2 * batch : batch,
        totalMs,
        imagesPerSecond: batch / (totalMs / 1000),
        ortMs,
        workerConversionMs: workerMs,
        threadHopMs: hopMs,
        outsideOrtMs: totalMs - ortMs,
        outsideOrtShare: (totalMs - ortMs) / totalMs,
      });
    }
    const best = results.reduce((a, b) => (b.totalMs < a.totalMs ? b : a));
    const report = { model: pipeline.dir, device, threads, spinning, size, steps, scheduler, guidance, loadMs, runs: results, best };
    if (v.json === true) {
      console.log(JSON.stringify(report, null, 2));
      return;
    }
    console.log(
      `model ${pipeline.dir} (${device}, ${threads} threads${spinning ? ', spinning' : ''}), ${size}×${size}, ${steps} ${scheduler} steps, guidance ${guidance}, batch ${batch}`,
    );
    console.log(`load ${loadMs.toFixed(0)} ms`);
    for (const r of results) {
      console.log(
        `${r.imagesPerSecond.toFixed(3)} images/s: ${r.totalMs.toFixed(0)} ms for ${r.images} images, ${r.unetCalls} UNet calls of ${r.unetRows} rows; ` +
          `onnxruntime ${r.ortMs.toFixed(0)} ms, outside onnxruntime ${r.outsideOrtMs.toFixed(0)} ms (${(100 * r.outsideOrtShare).toFixed(1)}%: ` +
          `worker conversions ${r.workerConversionMs.toFixed(0)} ms, thread hop ${r.threadHopMs.toFixed(0)} ms, main-thread JS ${(r.outsideOrtMs - r.workerConversionMs - r.threadHopMs).toFixed(0)} ms)`,
      );
    }
  } finally {
    await pipeline.close();
  }
}

// `generate` through the queue: the images of generate() (prompt-major: every seed of the first prompt, then the next),
// each job one prompt with up to `batchSize` of its seeds (with seeds a multiple of the batch, the local run's own
// UNet calls). Workers return raw RGB; the caller encodes and writes the PNGs exactly as the local run does (same
// names, same metadata), all at the end. A rerun after a kill finds its jobs by their ids and collects them.
import type { Pipeline } from '../model/pipeline.js';
import { validateGenerateOptions, type GeneratedImage, type GenerateOptions } from '../sample/generate.js';
import { checkGenerateResult } from './job-results.js';
import { QueueError } from './queue-error.js';
import { jobIdOf, PAYLOAD_FORMAT, type GenerateJob } from './payload.js';
import { Submission, type FinishedJob, type QueueTarget } from './submission.js';

/** A finished generate run: its images in generate()'s order, and `release` to call once they are written. */
export interface QueuedImages {
  images: GeneratedImage[];
  /** removes the run's jobs and artifacts from Redis: call it once the images are durably written */
  release(): Promise<void>;
}

/**
 * The images `generate(pipeline, options)` makes, computed by the queue's workers for this pipeline's model
 * (`fingerprint`: its edit fingerprint, lib/edit/context.ts openEditContext). Options are validated here first, as
 * generate() does; `conditioning` and `onProgress` are not sent (a queue run uses the text encoder). Example:
 * `const q = await generateOnQueue({ url }, pipeline, ctx.fingerprint, options); await write(q.images); await q.release()`.
 */
export async function generateOnQueue(
  target: QueueTarget,
  pipeline: Pipeline,
  fingerprint: string,
  options: GenerateOptions,
): Promise<QueuedImages> {
  validateGenerateOptions(pipeline, options);
  const batch = options.batchSize ?? 8;
  const S = options.seeds.length;
  const jobs: GenerateJob[] = [];
  /** job id → the places of its images: (prompt index, first seed index) */
  const places = new Map<string, { promptIndex: number; seedIndex: number }[]>();
  options.prompts.forEach((prompt, promptIndex) => {
    for (let k = 0; k < S; k += batch) {
      const job: GenerateJob = {
        kind: 'generate',
        format: PAYLOAD_FORMAT,
        fingerprint,
        prompt,
        seeds: options.seeds.slice(k, k + batch),
        steps: options.steps,
        guidance: options.guidance,
        height: options.height,
        width: options.width,
        batchSize: batch,
        ...(options.scheduler !== undefined ? { scheduler: options.scheduler } : {}),
        ...(options.negativePrompt !== undefined ? { negativePrompt: options.negativePrompt } : {}),
      };
      const id = jobIdOf(job);
      if (!places.has(id)) jobs.push(job);
      places.set(id, [...(places.get(id) ?? []), { promptIndex, seedIndex: k }]);
    }
  });
  const slots: (GeneratedImage | undefined)[] = new Array(options.prompts.length * S);
  const finished: FinishedJob[] = [];
  const submission = await Submission.open(target, fingerprint);
  try {
    await submission.run(jobs, async (f) => {
      const job = f.data as GenerateJob;
      if (f.failedReason !== undefined) throw new QueueError(`a generate job failed on the queue: ${f.failedReason}`);
      const r = checkGenerateResult(f.value, job.seeds, options.width, options.height);
      const bytes = await submission.artifacts(r.images.map((im) => im.artifact)); // one round trip per job
      for (const { promptIndex, seedIndex } of places.get(f.id)!) {
        for (const [j, im] of r.images.entries()) {
          const rgb = new Uint8Array(bytes[j]!);
          if (rgb.length !== im.width * im.height * 3)
            throw new QueueError(`a worker returned an image of ${rgb.length} bytes for ${im.width}×${im.height}`);
          slots[promptIndex * S + seedIndex + j] = {
            prompt: options.prompts[promptIndex]!,
            promptIndex,
            seed: im.seed,
            width: im.width,
            height: im.height,
            rgb,
          };
        }
      }
      finished.push(f);
      return []; // nothing is written before every image is here (generate writes all or nothing)
    });
  } catch (err) {
    await submission.close();
    throw err;
  }
  return {
    images: slots as GeneratedImage[],
    release: async () => {
      try {
        await submission.release(finished);
      } finally {
        await submission.close();
      }
    },
  };
}

// `time-edit bench save-checkpoint`: `edit --save-checkpoint`'s writer on a large fp32 single-file checkpoint,
// timed against `cp` of the same file in the same run (and `cp` followed by an fsync of the copy, since the writer
// makes its file durable), with the process's peak RSS. The checkpoint is made here: SD 1.x's 32 K/V weights at full
// size, a one-layer CLIP-L-width text encoder, and padding tensors up to --gb gigabytes; it is deleted afterwards.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { helpRequested, parseCommandLine } from '../../flags.js';
import { UsageError } from '../../errors.js';
import { openCheckpoint } from '../../../checkpoint/open-checkpoint.js';
import { SD_KV_KEYS } from '../../../checkpoint/sd-keys.js';
import { writeMergedCheckpoint } from '../../../edit/merged-checkpoint.js';
import { gaussianNoise } from '../../../sample/noise.js';
import type { Edit } from '../../../edit/edit.js';

const usage = `usage: time-edit bench save-checkpoint [--gb 4] [--dir DIR] [--runs 1] [--json]

Writes an fp32 SD 1.x-layout checkpoint of --gb GB (default 4) in --dir (default the system temp folder), then
times \`cp\` of it, the merged-checkpoint writer (a 308-row edit of the 32 K/V weights, as --save-checkpoint), and
\`cp\` again, --runs times; prints the writer's time over cp's (and over cp + fsync of the copy) and the peak RSS.
Every file is deleted at the end.`;

/** One tensor of the generated file: its name, shape and a byte source. */
interface GeneratedTensor {
  name: string;
  shape: number[];
  bytes: number;
}

/** Writes an fp32 SD 1.x-layout checkpoint of about `gb` GB to `path` (see the header comment). */
export function writeCheckpoint(path: string, gb: number): void {
  const d = 768;
  const tensors: GeneratedTensor[] = [];
  const f32 = (name: string, shape: number[]) => tensors.push({ name, shape, bytes: 4 * shape.reduce((a, b) => a * b, 1) });
  const te = 'cond_stage_model.transformer.text_model.';
  f32(`${te}embeddings.token_embedding.weight`, [1000, d]);
  f32(`${te}embeddings.position_embedding.weight`, [77, d]);
  for (const p of ['q', 'k', 'v', 'out']) {
    f32(`${te}encoder.layers.0.self_attn.${p}_proj.weight`, [d, d]);
    f32(`${te}encoder.layers.0.self_attn.${p}_proj.bias`, [d]);
  }
  for (const n of ['layer_norm1', 'layer_norm2', 'final_layer_norm']) {
    const prefix = n === 'final_layer_norm' ? te : `${te}encoder.layers.0.`;
    f32(`${prefix}${n}.weight`, [d]);
    f32(`${prefix}${n}.bias`, [d]);
  }
  f32(`${te}encoder.layers.0.mlp.fc1.weight`, [3072, d]);
  f32(`${te}encoder.layers.0.mlp.fc1.bias`, [3072]);
  f32(`${te}encoder.layers.0.mlp.fc2.weight`, [d, 3072]);
  f32(`${te}encoder.layers.0.mlp.fc2.bias`, [d]);
  for (const k of SD_KV_KEYS) f32(k.singleFile, [k.layer.width, d]);
  const target = gb * 1e9;
  let total = tensors.reduce((s, t) => s + t.bytes, 0);
  for (let i = 0; total < target; i++) {
    const rows = Math.min(131072, Math.ceil((target - total) / (4 * 1024)));
    f32(`model.diffusion_model.padding.${i}.weight`, [rows, 1024]);
    total += 4 * rows * 1024;
  }
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let at = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [at, at + t.bytes] };
    at += t.bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const fd = openSync(path, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, json);
    const noise = Buffer.from(gaussianNoise(5, 4 * 1024 * 1024).map((x) => x * 0.02).buffer);
    for (const t of tensors) for (let done = 0; done < t.bytes; ) done += writeSync(fd, noise, 0, Math.min(noise.length, t.bytes - done));
  } finally {
    closeSync(fd);
  }
}

function seconds(f: () => void): number {
  const t0 = performance.now();
  f();
  return (performance.now() - t0) / 1000;
}

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      options: {
        gb: { type: 'string' },
        dir: { type: 'string' },
        runs: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  const gb = Number(v.gb ?? '4');
  if (!(gb > 0 && gb <= 64)) throw new UsageError(`--gb must be a number in (0, 64], got '${v.gb}'`);
  const runs = Number(v.runs ?? '1');
  if (!Number.isSafeInteger(runs) || runs < 1) throw new UsageError(`--runs must be a whole number ≥ 1, got '${v.runs}'`);
  const dir = mkdtempSync(join(v.dir ?? tmpdir(), 'time-edit-bench-ckpt-'));
  try {
    const src = join(dir, 'model.safetensors');
    const writeSeconds = seconds(() => writeCheckpoint(src, gb));
    const size = statSync(src).size;
    const d = 768;
    const n = 308;
    const edit: Edit = {
      d,
      fingerprint: 'bench',
      steps: [
        {
          pairs: [{ source: 'a circle', destination: 'a purple circle' }],
          preserve: [],
          lambda: 0.1,
          augmentations: [],
          mode: 'kv',
          rows: n,
          D: gaussianNoise(1, n * d).map((x) => x * 0.05),
          G: gaussianNoise(2, n * d).map((x) => x * 0.001),
        },
      ],
    };
    const copy = join(dir, 'copy.safetensors');
    const cp = (sync: boolean) =>
      seconds(() => {
        const r = spawnSync('cp', [src, copy]);
        if (r.status !== 0) throw new Error(`cp failed: ${r.stderr}`);
        if (sync) spawnSync('sync', [copy]);
      });
    const results: { cp: number; cpSync: number; merge: number }[] = [];
    for (let i = 0; i < runs; i++) {
      const before = cp(false);
      rmSync(copy);
      const beforeSync = cp(true);
      rmSync(copy);
      const t0 = performance.now();
      await writeMergedCheckpoint(openCheckpoint(src), edit, join(dir, 'merged.safetensors'), { fingerprint: 'bench' });
      const merge = (performance.now() - t0) / 1000;
      rmSync(join(dir, 'merged.safetensors'));
      const after = cp(false);
      rmSync(copy);
      const afterSync = cp(true);
      rmSync(copy);
      results.push({ cp: (before + after) / 2, cpSync: (beforeSync + afterSync) / 2, merge });
    }
    const peakRssMb = process.resourceUsage().maxRSS / 1024;
    const report = { bytes: size, writeSeconds, runs: results, peakRssMb };
    if (v.json === true) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(`checkpoint: ${(size / 1e9).toFixed(2)} GB fp32 (made in ${writeSeconds.toFixed(1)} s)`);
      for (const r of results)
        console.log(
          `  cp ${r.cp.toFixed(2)} s, cp + fsync ${r.cpSync.toFixed(2)} s, --save-checkpoint writer ${r.merge.toFixed(2)} s: ` +
            `${(r.merge / r.cp).toFixed(2)}× cp, ${(r.merge / r.cpSync).toFixed(2)}× cp + fsync`,
        );
      console.log(`  peak RSS of this process: ${peakRssMb.toFixed(0)} MB`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

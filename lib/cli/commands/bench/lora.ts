// `time-edit bench lora`: the error of a LoRA of an edit against the exact edit, per rank and truncation, on the
// embedded model (ΔW, the K/V outputs on the edit's rows, and the UNet's noise prediction) and on SD 1.x-shaped K/V
// weights (ΔW and the K/V outputs): the table of docs/lora.md, from which `edit --lora`'s defaults are chosen.
import { helpRequested, parseCommandLine } from '../../flags.js';
import { UsageError } from '../../errors.js';
import { loadPipeline } from '../../../model/pipeline.js';
import { computeModelEdit, openEditContext } from '../../../edit/context.js';
import { kvWeightsOfOnnx } from '../../../edit/lora-modules.js';
import { factorEdit, LORA_TRUNCATIONS } from '../../../edit/lora-factor.js';
import { liftRows, loraErrorTable, measureUnetChange, syntheticSdWeights, type LoraBenchRow } from '../../../edit/lora-bench.js';
import { defaultSolver } from '../../../solver/select.js';
import type { Edit } from '../../../edit/edit.js';

const usage = `usage: time-edit bench lora [--source TEXT] [--dest TEXT] [--ranks 4,8,16,32,64,128] [--no-sd] [--json]

For the edit --source → --dest (default "a circle" → "a purple circle", the paper's λ and augmentations) on the
embedded model, and for SD 1.x-shaped K/V weights (seeded, anisotropic, d = 768) with the embedded model's edit rows
lifted to 768 dimensions (--no-sd skips them), prints per truncation (per-matrix SVD of each ΔW, or one shared
factorization of M − I) and rank (--ranks, plus the exact rank): the relative error of ΔW over all 32 modules and
in the worst one, of the K/V outputs' change on the edit's source rows, and (embedded model) of the UNet's noise
prediction against the exact edit, relative to the exact edit's own change; then the seconds edit --lora takes to
factor. The numbers of docs/lora.md come from this command.`;

function parseRanks(text: string): number[] {
  const ranks = text.split(',').map((s) => Number(s.trim()));
  if (ranks.length === 0 || !ranks.every((r) => Number.isSafeInteger(r) && r >= 1))
    throw new UsageError(`--ranks must be whole numbers ≥ 1, got '${text}'`);
  return [...new Set(ranks)].sort((a, b) => a - b);
}

function printTable(title: string, rows: LoraBenchRow[]): void {
  console.log(title);
  const unet = rows.some((r) => r.unetChange !== undefined);
  console.log(
    `  ${'truncation'.padEnd(10)} ${'rank'.padStart(5)} ${'params'.padStart(9)} ${'ΔW err'.padStart(9)} ${'worst'.padStart(9)} ${'K/V out'.padStart(9)}${unet ? ` ${'UNet'.padStart(9)}` : ''}`,
  );
  const e = (x: number | undefined) => (x === undefined ? '' : x === 0 ? '0' : x.toExponential(2)).padStart(9);
  for (const r of rows)
    console.log(
      `  ${r.truncation.padEnd(10)} ${String(r.rank).padStart(5)} ${`${(r.parameters / 1e6).toFixed(2)}M`.padStart(9)} ${e(r.deltaError)} ${e(r.worstModule)} ${e(r.outputError)}${unet ? ` ${e(r.unetChange)}` : ''}`,
    );
}

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommandLine(
    {
      args,
      options: {
        source: { type: 'string' },
        dest: { type: 'string' },
        ranks: { type: 'string' },
        'no-sd': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    },
    usage,
  );
  const v = parsed.values;
  if (helpRequested(v, usage)) return;
  const ranks = parseRanks(v.ranks ?? '4,8,16,32,64,128');
  const pair = { source: v.source ?? 'a circle', destination: v.dest ?? 'a purple circle' };
  const report: Record<string, unknown> = { pair, ranks };
  const pipeline = await loadPipeline(undefined, {});
  try {
    const ctx = await openEditContext(pipeline);
    const computed = await computeModelEdit(ctx, { pairs: [pair] });
    const weights = kvWeightsOfOnnx(ctx.unet, ctx.map);
    const rowsCount = computed.source.length / ctx.map.d;
    const toy = await loraErrorTable(weights, computed.edit, { data: computed.source, count: rowsCount }, ranks);
    await measureUnetChange(pipeline, ctx.unet, ctx.map, weights, computed.edit, toy.rows);
    report.embedded = { d: ctx.map.d, rows: rowsCount, exactRank: toy.exactRank, table: toy.rows };
    if (v.json !== true)
      printTable(
        `embedded model (d = ${ctx.map.d}, ${rowsCount} edit rows, exact rank ${toy.exactRank}; UNet: ${4} prompts × ${3} timesteps):`,
        toy.rows,
      );
    if (v['no-sd'] !== true) {
      const d = 768;
      const w = ctx.map.d;
      // One isometry (seed 11) for both, independent noise: D = C* − C spans all 768 dimensions, as SD's does.
      const source = liftRows(computed.source, rowsCount, w, d, 11, 0.05, 1);
      const destination = liftRows(computed.destination, rowsCount, w, d, 11, 0.05, 2);
      const solver = await defaultSolver();
      const [solved] = await solver.solve(d, [{ source, destination, rows: rowsCount, lambda: 0.1 }]);
      const step = computed.edit.steps[0]!;
      const edit: Edit = { d, fingerprint: 'synthetic', steps: [{ ...step, rows: rowsCount, D: solved!.D, G: solved!.G }] };
      const sd = syntheticSdWeights(0, d);
      const table = await loraErrorTable(sd, edit, { data: source, count: rowsCount }, ranks, { factor: false });
      const timings: Record<string, number> = {};
      for (const truncation of LORA_TRUNCATIONS)
        for (const rank of [64, table.exactRank]) {
          const t0 = performance.now();
          await factorEdit(sd, edit, { rank, truncation });
          timings[`${truncation} ${rank}`] = (performance.now() - t0) / 1000;
        }
      report.sdShaped = { d, rows: rowsCount, exactRank: table.exactRank, table: table.rows, factorSeconds: timings };
      if (v.json !== true) {
        printTable(`SD 1.x-shaped K/V (synthetic, d = 768, ${rowsCount} lifted edit rows, exact rank ${table.exactRank}):`, table.rows);
        console.log(
          `  factoring (edit --lora): ${Object.entries(timings)
            .map(([k, s]) => `${k}: ${s.toFixed(1)} s`)
            .join(', ')}`,
        );
      }
    }
  } finally {
    await pipeline.close();
  }
  if (v.json === true) console.log(JSON.stringify(report, null, 2));
}

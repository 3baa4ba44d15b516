#!/usr/bin/env node
// The ablation table of docs/ablations.md: `eval timed` on the embedded model's toy TIMED file once per setting
// (TIME as published, K only, V only, no augmentations, the down/mid/up layer subsets, with preservation prompts),
// each into its own folder under --out, then one table of efficacy, generality and specificity (mean over the entries,
// and per entry) with the unedited baseline and the oracle of the first run. Each `eval timed` run resumes where it
// stopped, so rerunning the same command after an interruption only computes what is missing.
//
//   node scripts/ablation-table.mjs --out out/ablations [--seeds 8] [--model PATH --clip DIR] [--only NAME,NAME]
//
// Writes OUT/<setting>/ (the eval timed folders), OUT/ablations.csv and OUT/ablations.md.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parseCsv } from '../lib/eval/timed-csv.js';

/**
 * The preservation prompts (UCE-style rows kept unchanged), fixed before any run with them was looked at: explicit
 * requests for a non-default colour of each shape, which an edit of the implicit colour must keep obeying. None of
 * them appears anywhere in toy_timed.csv (no test prompt, no target): test/ablation-table.test.js checks it.
 */
export const PRESERVATION_PROMPTS = [
  'a green circle',
  'a blue circle',
  'an orange square',
  'a red square',
  'a yellow triangle',
  'a blue triangle',
  'a green star',
  'an orange star',
];

/** The settings of the table, in its order: a folder name, a label, and the eval timed flags. */
export const ABLATION_SETTINGS = [
  { name: 'time', label: 'TIME (K+V, λ 0.1, augmentations)', flags: [] },
  { name: 'konly', label: 'K only', flags: ['--only-k'] },
  { name: 'vonly', label: 'V only', flags: ['--only-v'] },
  { name: 'noaug', label: 'no augmentations', flags: ['--no-augment'] },
  { name: 'down', label: 'down-block layers only (0-5)', flags: ['--layers', 'down'] },
  { name: 'mid', label: 'mid-block layer only (6)', flags: ['--layers', 'mid'] },
  { name: 'up', label: 'up-block layers only (7-15)', flags: ['--layers', 'up'] },
  { name: 'preserve', label: 'with preservation prompts', flags: PRESERVATION_PROMPTS.flatMap((p) => ['--preserve', p]) },
];

const METRICS = ['efficacy', 'generality', 'specificity'];
const pct = (x) => `${(100 * x).toFixed(1)}%`;

/** Rows of the table from each setting's summary.json and results.csv (missing settings are left out). */
export function collectTable(outDir, settings = ABLATION_SETTINGS) {
  const rows = [];
  let first;
  for (const s of settings) {
    let summary;
    try {
      summary = JSON.parse(readFileSync(join(outDir, s.name, 'summary.json'), 'utf8'));
    } catch {
      continue;
    }
    const perEntry = parseCsv(readFileSync(join(outDir, s.name, 'results.csv'), 'utf8')).slice(1);
    first ??= { summary, perEntry };
    rows.push({ name: s.name, label: s.label, scores: summary.summary.edited, perEntry: perEntry.map((f) => f.slice(6, 9).map(Number)) });
  }
  if (first === undefined) return [];
  const pick = (model, off) => ({
    name: model,
    label: model === 'baseline' ? 'baseline (unedited)' : 'oracle (unedited, explicit prompts)',
    scores: first.summary.summary[model],
    perEntry: first.perEntry.map((f) => f.slice(off, off + 3).map(Number)),
  });
  return [pick('baseline', 3), ...rows, pick('oracle', 9)];
}

function markdown(rows, entries) {
  const head = `| setting | efficacy | generality | specificity | ${entries.map((e) => `entry ${e} (E/G/S)`).join(' | ')} |`;
  const sep = `|---|---|---|---|${entries.map(() => '---').join('|')}|`;
  const body = rows.map(
    (r) =>
      `| ${r.label} | ${METRICS.map((m) => pct(r.scores[m])).join(' | ')} | ${r.perEntry.map((e) => e.map((x) => Math.round(100 * x)).join(' / ')).join(' | ')} |`,
  );
  return `${[head, sep, ...body].join('\n')}\n`;
}

function main() {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      seeds: { type: 'string' },
      model: { type: 'string' },
      clip: { type: 'string' },
      only: { type: 'string' },
      'collect-only': { type: 'boolean' },
    },
  });
  if (values.out === undefined) {
    console.error('usage: node scripts/ablation-table.mjs --out DIR [--seeds 8] [--model PATH --clip DIR] [--only NAME,…] [--collect-only]');
    process.exit(2);
  }
  const out = resolve(values.out);
  mkdirSync(out, { recursive: true });
  const cli = fileURLToPath(new URL('../lib/cli.js', import.meta.url));
  const only = values.only?.split(',');
  const chosen = ABLATION_SETTINGS.filter((s) => only === undefined || only.includes(s.name));
  if (values['collect-only'] !== true)
    for (const s of chosen) {
      const args = ['eval', 'timed', '--seeds', values.seeds ?? '8', ...s.flags, '--out', join(out, s.name)];
      if (values.model !== undefined) args.push('--model', values.model);
      if (values.clip !== undefined) args.push('--clip', values.clip);
      console.error(`ablation-table: ${s.name}: time-edit ${args.join(' ')}`);
      const r = spawnSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
      if (r.status !== 0) {
        console.error(`ablation-table: ${s.name} failed (exit ${r.status}); rerun the same command to resume`);
        process.exit(1);
      }
    }
  const rows = collectTable(out);
  const entries = rows[0]?.perEntry.map((_, i) => i) ?? [];
  const csv = [
    `setting,${METRICS.join(',')}`,
    ...rows.map((r) => `${r.name},${METRICS.map((m) => r.scores[m].toFixed(4)).join(',')}`),
  ].join('\n');
  writeFileSync(join(out, 'ablations.csv'), `${csv}\n`);
  writeFileSync(join(out, 'ablations.md'), markdown(rows, entries));
  process.stdout.write(markdown(rows, entries));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();

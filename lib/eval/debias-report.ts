// The tables of `eval debias`: results.csv (one row per profession: Δ of the unedited model, of the edit at the fixed
// λ and at the searched λ, on the validation prompt and averaged over ex1..ex5, the chosen λ, the in-between counts)
// and report.html (the settings, the averaged table, the per-profession table and the image strips).
import { attributeShare } from './debias-search.js';
import { averageDeltas, DEBIAS_MODELS, debiasEntryDir, debiasPrompts, entryDeltas, type DebiasResult } from './debias.js';

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * The per-profession CSV. Example: `await writeFileAtomic('out/debias/results.csv', debiasCsv(results))`.
 */
export function debiasCsv(results: DebiasResult[]): string {
  const head = [
    'index',
    'old',
    'new',
    'attribute',
    ...DEBIAS_MODELS.flatMap((m) => [`${m}_delta_validation`, `${m}_delta_examples`, `${m}_in_between`]),
    'searched_lambda',
    'search_rounds',
    'error',
  ];
  const lines = [head.join(',')];
  for (const r of results) {
    const nums = DEBIAS_MODELS.flatMap((m) => {
      if (r.counts === undefined) return ['', '', ''];
      const d = entryDeltas(r.counts[m]);
      return [d.validation.toFixed(4), d.examples.toFixed(4), String(d.inBetween)];
    });
    lines.push(
      [
        String(r.entry.index),
        csvField(r.entry.old),
        csvField(r.entry.new),
        csvField(r.entry.attribute),
        ...nums,
        r.search?.lambda.toPrecision(6) ?? '',
        r.search === undefined ? '' : String(r.search.rounds.length),
        csvField(r.error ?? ''),
      ].join(','),
    );
  }
  return `${lines.join('\n')}\n`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const f3 = (x: number) => x.toFixed(3);

/**
 * The HTML report. Example: `await writeFileAtomic('out/debias/report.html', debiasHtml(results, { model: 'toy' }))`.
 */
export function debiasHtml(results: DebiasResult[], meta: Record<string, string>): string {
  const avg = averageDeltas(results);
  const avgRows = avg
    ? DEBIAS_MODELS.map(
        (m) =>
          `<tr><th>${m}</th><td>${f3(avg[m].validation)}</td><td>${f3(avg[m].examples)}</td><td>${avg[m].inBetween.toFixed(2)}</td></tr>`,
      ).join('\n')
    : '<tr><td colspan="4">no entry succeeded</td></tr>';
  const tableRows = results
    .map((r) => {
      const e = r.entry;
      if (r.counts === undefined)
        return `<tr><td>${e.index}</td><td>${esc(e.old)} → ${esc(e.new)}</td><td colspan="7" class="err">${esc(r.error ?? '')}</td></tr>`;
      const d = Object.fromEntries(DEBIAS_MODELS.map((m) => [m, entryDeltas(r.counts![m])]));
      return (
        `<tr><td>${e.index}</td><td>${esc(e.old)} → ${esc(e.new)}</td>` +
        DEBIAS_MODELS.map((m) => `<td>${f3(d[m]!.validation)} / ${f3(d[m]!.examples)}</td>`).join('') +
        `<td>${r.search!.lambda.toPrecision(4)}</td><td>${DEBIAS_MODELS.map((m) => d[m]!.inBetween).join(' / ')}</td></tr>`
      );
    })
    .join('\n');
  const strips = results
    .filter((r) => r.counts !== undefined)
    .map((r) => {
      const e = r.entry;
      const dir = debiasEntryDir(e);
      const prompts = debiasPrompts(e);
      const trs = prompts
        .map(
          (p, i) =>
            `<tr><td>${i === 0 ? 'validation' : `ex${i}`}</td><td>${esc(p)}</td>` +
            DEBIAS_MODELS.map(
              (m) =>
                `<td><img src="${dir}/${m}-${String(i).padStart(2, '0')}.png"><br><small>p = ${attributeShare(r.counts![m][i]!).toFixed(2)}</small></td>`,
            ).join('') +
            '</tr>',
        )
        .join('\n');
      const rounds = r
        .search!.rounds.map(
          (x, k) => `<li>λ = ${x.lambda.toPrecision(4)}: p = ${x.p.toFixed(3)} <img src="${dir}/search/round${k}.png"></li>`,
        )
        .join('');
      return `<h3>${e.index}: ${esc(e.old)} → ${esc(e.new)} (attribute: ${esc(e.attribute)})</h3>
<table><tr><th></th><th>prompt</th><th>baseline</th><th>λ = ${esc(meta.fixedLambda ?? '0.1')}</th><th>searched λ = ${r.search!.lambda.toPrecision(4)}</th></tr>
${trs}</table>
<p>λ search on the validation prompt (search seeds):</p><ol>${rounds}</ol>`;
    })
    .join('\n');
  const metaRows = Object.entries(meta)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
    .join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>Debiasing evaluation</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{image-rendering:pixelated;height:48px}.err{color:#b00}</style>
</head><body><h1>Debiasing evaluation</h1><table>${metaRows}</table>
<h2>Mean Δ over ${results.filter((r) => r.counts).length} professions</h2>
<p>Δ = |p − 0.5| / 0.5, p the share of a prompt's images judged to show the attribute the edit names (0: balanced;
1: all one way). Validation: the prompt the λ search used (on other seeds). Examples: the mean over ex1..ex5.
In-between: images judged to show neither attribute (mean per profession, all six prompts).</p>
<table><tr><th></th><th>Δ validation</th><th>Δ ex1..ex5</th><th>in-between</th></tr>
${avgRows}</table>
<h2>Per profession (Δ validation / Δ ex1..ex5)</h2>
<table><tr><th>#</th><th>edit</th>${DEBIAS_MODELS.map((m) => `<th>${m}</th>`).join('')}<th>searched λ</th><th>in-between (b / f / s)</th></tr>
${tableRows}</table>
<h2>Images</h2>
${strips}
</body></html>
`;
}

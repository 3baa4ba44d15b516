// The fuzz suite's CI entry (docs/fuzzing.md): (a) every seed kept in test/fuzz/regressions.json, each a call
// that once broke the solver API's contract, must now behave per contract; (b) a bounded seeded run of the
// generator (30,000 calls by default, 35-75 s on two cores) must show no crash, hang, wrong accept, wrong
// refusal, wrong error class, inaccurate result, written output on refusal or unhandled error. Calls run in child
// processes (test/fuzz/run.js), so a crashing call fails this test instead of killing the runner.
// TIME_EDIT_FUZZ_CALLS and TIME_EDIT_FUZZ_SEED change the size and the first seed of (b).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { GENERATOR_VERSION, generateCall, SHRINK_CASE } from './fuzz/generate-call.js';
import { formatSummary, loadRegressions, runFuzz, runSeeds } from './fuzz/run.js';

const calls = Number(process.env.TIME_EDIT_FUZZ_CALLS ?? 30_000);
const firstSeed = Number(process.env.TIME_EDIT_FUZZ_SEED ?? 1);

test('every regression seed now behaves per contract', async (t) => {
  const regressions = loadRegressions();
  assert.equal(
    regressions.generatorVersion,
    GENERATOR_VERSION,
    'test/fuzz/regressions.json was recorded with another generator version: its seeds mean other calls now; re-record them',
  );
  const seeds = regressions.entries.map((e) => e.seed).filter((s) => typeof s === 'number');
  const summary = await runSeeds(seeds, { shrinkCase: regressions.entries.some((e) => e.seed === SHRINK_CASE) });
  const bySeed = new Map(summary.records.map((r) => [r.seed, r]));
  for (const entry of regressions.entries) {
    await t.test(`${entry.defect ?? entry.case}: seed ${entry.seed} (${entry.fn}, today ${entry.verdict})`, () => {
      if (typeof entry.seed === 'number') {
        const call = generateCall(entry.seed);
        assert.deepEqual([call.fn, call.case], [entry.fn, entry.case], `seed ${entry.seed} no longer generates the recorded call`);
      }
      const record = bySeed.get(entry.seed);
      assert.ok(record, `seed ${entry.seed} produced no result`);
      assert.equal(record.verdict, 'ok', `${record.verdict}: ${record.detail ?? ''} (recorded: ${entry.why})`);
    });
  }
});

test(`a seeded fuzz run of ${calls} calls from seed ${firstSeed} breaks no contract`, { timeout: 600_000 }, async (t) => {
  const summary = await runFuzz({ calls, seed: firstSeed, jobs: 2 });
  const counts = Object.entries(summary.counts)
    .map(([v, n]) => `${v} ${n}`)
    .join(', ');
  t.diagnostic(`${summary.calls} calls in ${(summary.wallMs / 1000).toFixed(1)} s: ${counts}`);
  const failing = Object.fromEntries(Object.entries(summary.counts).filter(([v]) => v !== 'ok'));
  const none = Object.fromEntries(Object.keys(failing).map((v) => [v, 0]));
  assert.deepEqual(failing, none, formatSummary(summary));
});

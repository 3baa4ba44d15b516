// Job payloads are untrusted input: validateJob accepts only the exact shapes this tool submits, with the command
// line's bounds, and refuses anything else with a reason (no field names a file; unknown fields are refused).
// Also: job ids are deterministic (same payload → same id), and URLs are redacted in every message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobIdOf, validateJob } from '../lib/queue/payload.js';
import { PayloadError } from '../lib/queue/queue-error.js';
import { redactSecrets, redactUrl, resolveQueueUrl } from '../lib/queue/connection.js';
import { checkTimedResult } from '../lib/queue/job-results.js';

const FP = 'ab'.repeat(32);
const batch = (over = {}) => ({
  kind: 'batch',
  format: 1,
  fingerprint: FP,
  defaults: {},
  lines: [{ line: 1, text: '{"source":"a circle","destination":"a red circle"}' }],
  ...over,
});
const generate = (over = {}) => ({
  kind: 'generate',
  format: 1,
  fingerprint: FP,
  prompt: 'a circle',
  seeds: [0, 1],
  steps: 5,
  guidance: 7.5,
  height: 32,
  width: 32,
  batchSize: 8,
  ...over,
});
const pairs = Array.from({ length: 5 }, (_, i) => ({ test: `t${i}`, gt: `g${i}` }));
const timed = (over = {}) => ({
  kind: 'timed',
  format: 1,
  fingerprint: FP,
  entry: { index: 0, old: 'a circle', new: 'a red circle', positives: pairs, negatives: pairs },
  seeds: [0, 1],
  steps: 5,
  guidance: 7.5,
  lambda: 0.1,
  augmentations: [],
  onlyV: false,
  mode: 'embedding',
  keepUncond: false,
  batchSize: 16,
  ...over,
});

const refused = (data, pattern) =>
  assert.throws(
    () => validateJob(data, FP),
    (err) => err instanceof PayloadError && pattern.test(err.message),
  );

test('valid payloads of each kind come back as they were sent', () => {
  for (const p of [
    batch(),
    generate(),
    timed(),
    generate({ scheduler: 'ddim', negativePrompt: 'x' }),
    timed({ onlyK: true, layers: [0, 3] }),
  ])
    assert.deepEqual(validateJob(p, FP), p);
});

test('a payload naming a path or a model, or any field this tool does not send, is refused', () => {
  refused(batch({ model: '/etc/passwd' }), /unexpected field 'model'/);
  refused(generate({ outDir: '/tmp/x' }), /unexpected field 'outDir'/);
  refused(timed({ clip: '/models/clip' }), /unexpected field 'clip'/);
  refused(batch({ lines: [{ line: 1, text: '{}', file: '/etc/shadow' }] }), /unexpected field 'file'/);
  refused(batch({ defaults: { lambda: 0.1, edit: 'x.safetensors' } }), /unexpected field 'edit'/);
  refused(timed({ entry: { ...timed().entry, dataset: '/x.csv' } }), /unexpected field 'dataset'/);
});

test('malformed payloads are refused with the reason', () => {
  refused(null, /must be a JSON object/);
  refused('{"kind":"batch"}', /must be a JSON object/);
  refused(batch({ format: 2 }), /'format' must be 1/);
  refused(batch({ kind: 'shell' }), /'kind' must be/);
  refused({ ...batch(), lines: undefined }, /'lines' must be a list/);
  refused(batch({ lines: [] }), /'lines' must be a list of 1/);
  refused(batch({ lines: [{ line: 0, text: 'x' }] }), /line' must be an integer/);
  refused(
    batch({
      lines: [
        { line: 1, text: 'x' },
        { line: 1, text: 'y' },
      ],
    }),
    /appears twice/,
  );
  refused(batch({ defaults: { lambda: -1 } }), /defaults.lambda' must be a number in \(0/);
  refused(batch({ defaults: { lambda: Number.NaN } }), /defaults.lambda/);
  refused(generate({ steps: 0 }), /'steps' must be an integer in \[1, 10000\]/);
  refused(generate({ steps: 1e9 }), /'steps'/);
  refused(generate({ guidance: Infinity }), /'guidance'/);
  refused(generate({ seeds: [-1] }), /seeds'\[0\] must be an integer/);
  refused(generate({ seeds: [1.5] }), /seeds'\[0\]/);
  refused(generate({ seeds: [] }), /'seeds' must be a list of 1/);
  refused(generate({ height: 1e6 }), /'height'/);
  refused(generate({ batchSize: 0 }), /'batchSize'/);
  refused(generate({ scheduler: 'rm -rf' }), /'scheduler'/);
  refused(generate({ prompt: 'x'.repeat(10_001) }), /longer than 10000/);
  refused(timed({ mode: 'native' }), /'mode'/);
  refused(timed({ keepUncond: true, mode: 'weights' }), /keepUncond/);
  refused(timed({ onlyK: true, onlyV: true }), /contradict/);
  refused(timed({ entry: { ...timed().entry, positives: pairs.slice(0, 4) } }), /5 \{test, gt\} pairs/);
  refused(timed({ entry: { ...timed().entry, old: '  ' } }), /must not be empty/);
});

test('a job for another model is refused by a worker of this one', () => {
  assert.throws(() => validateJob(batch({ fingerprint: 'cd'.repeat(32) }), FP), /the job is for model cdcd/);
  assert.throws(() => validateJob(batch({ fingerprint: '../../x' }), FP), /64 hex digits/);
});

test('job ids depend on the whole payload and only on it', () => {
  assert.equal(jobIdOf(batch()), jobIdOf(batch()));
  assert.notEqual(jobIdOf(batch()), jobIdOf(batch({ defaults: { lambda: 0.5 } })));
  assert.notEqual(jobIdOf(generate()), jobIdOf(generate({ seeds: [0, 2] })));
  assert.match(jobIdOf(timed()), /^timed-[0-9a-f]{40}$/);
});

test('URLs are redacted in messages; `env` reads TIME_EDIT_REDIS_URL', () => {
  assert.equal(redactUrl('redis://:s3cret@db.example:6379/2'), 'redis://:***@db.example:6379/2');
  assert.equal(redactUrl('rediss://alice:s3cret@db:6380'), 'rediss://***:***@db:6380');
  assert.equal(redactSecrets('WRONGPASS s3cret at redis://:s3cret@h:1', 'redis://:s3cret@h:1'), 'WRONGPASS *** at redis://***@h:1');
  assert.equal(resolveQueueUrl('env', { TIME_EDIT_REDIS_URL: 'redis://127.0.0.1:1' }), 'redis://127.0.0.1:1');
  assert.throws(
    () => resolveQueueUrl('http://:pw@x:1', {}),
    (e) => /redis:\/\//.test(e.message) && !e.message.includes('pw'),
  );
  assert.throws(() => resolveQueueUrl(undefined, {}), /TIME_EDIT_REDIS_URL/);
});

test('a worker result naming a file outside images/ is refused', () => {
  const ok = { result: { scores: {} }, files: [{ path: 'images/e0-a-circle/baseline/00-a-circle-seed0.png', artifact: 'k' }] };
  assert.equal(checkTimedResult(ok).files.length, 1);
  for (const path of ['../x.png', 'images/../../etc/x.png', '/etc/x.png', 'images/a/b/c/d.png', 'results.jsonl', 'images\\..\\x.png'])
    assert.throws(() => checkTimedResult({ ...ok, files: [{ path, artifact: 'k' }] }), /malformed result/, path);
});

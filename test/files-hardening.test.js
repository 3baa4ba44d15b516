// Hostile input and hostile conditions for the files the CLI reads and writes: damaged edit files (NaN/Inf/huge
// values, safetensors rule breaks, wrong JSON types), special files (/dev/zero, FIFOs, endless stdin), the --out
// lock under concurrent acquisition, `edit --batch` resume over damaged edit files, and all-or-nothing image
// output when the disk fills. Every fixture is generated here, in a temporary folder.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeSafetensors, encodeSafetensors } from '../lib/edit/safetensors.js';
import { loadEdit, saveEdit } from '../lib/edit/edit-file.js';
import { writeFileAtomic, writeFileAtomicSync } from '../lib/fs/durable-file.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'lib', 'cli.js');
const run = (args, opts = {}) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60000, ...opts });

let dir;
let goodEdit; // an edit file of the embedded model, made by the CLI
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'files-hardening-'));
  const r = run(['edit', '--source', 'a circle', '--dest', 'a purple circle', '--no-grid', '--out', join(dir, 'good')]);
  assert.equal(r.status, 0, r.stderr);
  goodEdit = readFileSync(join(dir, 'good', 'edit.safetensors'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Header JSON and data-buffer start of safetensors bytes (parsed independently of lib/). */
function layout(bytes) {
  const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
  return { header: JSON.parse(Buffer.from(bytes).toString('utf8', 8, 8 + n)), dataStart: 8 + n };
}

/** Safetensors bytes from a header given as raw JSON text and a data buffer (no checks: for crafting bad files). */
function rawSafetensors(headerText, data = Buffer.alloc(0)) {
  const h = Buffer.from(headerText, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

/** The good edit with float `index` of tensor `name` set to `value`. */
function withValue(name, index, value) {
  const b = Buffer.from(goodEdit);
  const { header, dataStart } = layout(b);
  b.writeFloatLE(value, dataStart + header[name].data_offsets[0] + 4 * index);
  return b;
}

test('A: an edit file with NaN, ±Inf or 3e38 in D/G is refused by generate --edit and edit --on, naming file, tensor and index', () => {
  for (const [value, shown] of [
    [NaN, 'NaN'],
    [Infinity, 'Infinity'],
    [-Infinity, '-Infinity'],
    [3e38, '3.0000000054977558e+38'],
  ]) {
    const file = join(dir, `bad-${shown}.safetensors`);
    writeFileSync(file, withValue('step0.G', 7, value));
    const g = run(['generate', 'a circle', '--edit', file, '--steps', '1', '--out', join(dir, `gen-${shown}`)]);
    assert.equal(g.status, 1, g.stderr);
    assert.ok(g.stderr.includes(`${file} is not a valid time-edit file: tensor step0.G has the value ${shown} at index 7`), g.stderr);
    assert.equal(existsSync(join(dir, `gen-${shown}`)), false);
  }
  const nanFile = join(dir, 'bad-NaN.safetensors');
  const e = run(['edit', '--source', 'a square', '--dest', 'a red square', '--on', nanFile, '--no-grid', '--out', join(dir, 'on-nan')]);
  assert.equal(e.status, 1, e.stderr);
  assert.match(e.stderr, /bad-NaN\.safetensors is not a valid time-edit file: tensor step0\.G has the value NaN at index 7/);
  assert.equal(existsSync(join(dir, 'on-nan', 'edit.safetensors')), false);
});

test('A: saveEdit refuses to write a NaN or a huge value, naming the tensor and index', () => {
  const step = {
    pairs: [],
    preserve: [],
    lambda: 0.1,
    augmentations: [],
    mode: 'kv',
    rows: 1,
    D: new Float32Array(4),
    G: Float32Array.from([0, 0, NaN, 0]),
  };
  const path = join(dir, 'never.safetensors');
  assert.throws(
    () => saveEdit(path, { d: 4, fingerprint: 'fp', steps: [step] }),
    /cannot save .*never\.safetensors: tensor step0\.G has the value NaN at index 2/,
  );
  step.G[2] = 0;
  step.D[3] = 2 ** 52; // exact in float32
  assert.throws(
    () => saveEdit(path, { d: 4, fingerprint: 'fp', steps: [step] }),
    /tensor step0\.D has the value 4503599627370496 at index 3/,
  );
  assert.equal(existsSync(path), false);
  step.D[3] = 1e3;
  saveEdit(path, { d: 4, fingerprint: 'fp', steps: [step] }); // ordinary values still save
});

test('B: safetensors rules: duplicate names, overlap, holes, trailing bytes, begin > end, big headers, exact lengths', () => {
  const t = (offs, shape = [1]) => ({ dtype: 'F32', shape, data_offsets: offs });
  const four = Buffer.alloc(4);
  const eight = Buffer.alloc(8);
  const cases = [
    [
      rawSafetensors('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', eight),
      /the key 'a' appears more than once/,
    ],
    [rawSafetensors(JSON.stringify({ a: t([0, 4]), b: t([0, 4]) }), four), /overlaps/],
    [rawSafetensors(JSON.stringify({ a: t([0, 4]) }), eight), /4 bytes after the last tensor/],
    [rawSafetensors(JSON.stringify({ a: t([4, 8]) }), eight), /data bytes \[0, 4\) before tensor a belong to no tensor/],
    [rawSafetensors(JSON.stringify({ a: t([4, 0], [0]) }), eight), /does not fit/],
    [rawSafetensors(JSON.stringify({ a: t([0, 8], [1]) }), eight), /does not fit/],
    [rawSafetensors(JSON.stringify({ 'step0.D': null })), /tensor step0\.D is null, not an object/],
    [rawSafetensors(JSON.stringify({ __metadata__: null })), /__metadata__ is null/],
  ];
  for (const [bytes, re] of cases)
    assert.throws(
      () => decodeSafetensors(bytes, 'x.safetensors'),
      (err) => err.name === 'SafetensorsError' && re.test(err.message) && err.message.includes('x.safetensors'),
    );
  // A header length of 2^64 − 1 is printed exactly.
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64LE(2n ** 64n - 1n);
  assert.throws(() => decodeSafetensors(huge, 'h.safetensors'), /header length 18446744073709551615[^0-9]/);
  // A 150 MB header (valid JSON padded with spaces) is over the format's 100 MB limit.
  const big = Buffer.alloc(8 + 150e6, 0x20);
  big.writeBigUInt64LE(BigInt(150e6));
  big.write('{}', 8);
  assert.throws(() => decodeSafetensors(big, 'big.safetensors'), /header length 150000000 is over the format's limit of 100000000 bytes/);
  // The encoder's own output still decodes, including zero-size tensors.
  const ok = encodeSafetensors({
    tensors: new Map([
      ['e', { dtype: 'F32', shape: [0], data: new Float32Array(0) }],
      ['x', { dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) }],
    ]),
    metadata: {},
  });
  assert.deepEqual([...decodeSafetensors(ok).tensors.get('x').data], [1, 2]);
});

test('B: edit-file metadata of the wrong JSON type names the file and key, not an internal TypeError', async () => {
  const { header } = layout(goodEdit);
  const md = header.__metadata__;
  const content = decodeSafetensors(goodEdit);
  for (const steps of ['[null]', '[1]', '[{"rows":308,"mode":"kv","lambda":0.1,"pairs":[null]}]']) {
    const file = join(dir, 'steps-meta.safetensors');
    writeFileSync(file, encodeSafetensors({ tensors: content.tensors, metadata: { ...md, steps } }));
    await assert.rejects(
      loadEdit(file),
      (err) =>
        err.name === 'EditError' &&
        err.message.startsWith(`${file} is not a valid time-edit file: `) &&
        !/TypeError|Cannot read/.test(err.message),
    );
  }
  const file = join(dir, 'null-tensor.safetensors');
  writeFileSync(file, rawSafetensors(JSON.stringify({ __metadata__: md, 'step0.D': null })));
  await assert.rejects(loadEdit(file), (err) => err.name === 'EditError' && err.message.includes(file) && err.message.includes('step0.D'));
});

/** Runs the CLI asynchronously with a hard time limit, so that a regression that blocks cannot hang the suite. */
function runLimited(args, { stdin, ms = 20000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: [stdin ?? 'ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    child.stdout.resume();
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

test('D: special files are refused at once by name: /dev/zero (via a .safetensors link), a FIFO, endless stdin', {
  timeout: 120000,
}, async () => {
  const link = join(dir, 'zero.safetensors');
  symlinkSync('/dev/zero', link);
  let r = await runLimited(['generate', 'a circle', '--edit', link, '--steps', '1', '--out', join(dir, 'gz')]);
  assert.equal(r.code, 1, `${r.signal} ${r.stderr}`);
  assert.match(r.stderr, /zero\.safetensors: it is a character device, not a regular file/);
  r = await runLimited(['edit', '--batch', '/dev/zero', '--out', join(dir, 'bz')]);
  assert.notEqual(r.signal, 'SIGKILL', 'edit --batch /dev/zero did not stop');
  assert.match(r.stderr, /\/dev\/zero: it is a character device, not a regular file/);
  const fifo = join(dir, 'edit.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  r = await runLimited(['generate', 'a circle', '--edit', fifo, '--steps', '1', '--out', join(dir, 'gf')]);
  assert.equal(r.code, 1, `${r.signal} ${r.stderr}`);
  assert.match(r.stderr, /edit\.fifo: it is a FIFO, not a regular file/);
  const { openSync, closeSync } = await import('node:fs');
  const zero = openSync('/dev/zero', 'r');
  try {
    r = await runLimited(['tokenize'], { stdin: zero });
  } finally {
    closeSync(zero);
  }
  assert.notEqual(r.signal, 'SIGKILL', 'tokenize < /dev/zero did not stop');
  assert.match(r.stderr, /standard input: more than the limit of 16 MiB/);
});

test('E: the --out lock under concurrent acquisition: 60 trials in 4 processes, exactly one holder each time', {
  timeout: 120000,
}, async () => {
  const { fork } = await import('node:child_process');
  const { pathToFileURL } = await import('node:url');
  const worker = join(dir, 'lock-worker.mjs');
  // Each worker waits for the trial's common start instant (busy-waiting, for the same millisecond), tries the lock,
  // reports, and holds what it got until told to let go.
  writeFileSync(
    worker,
    `
    import { lockOutputFolder } from ${JSON.stringify(pathToFileURL(join(root, 'lib', 'fs', 'out-lock.js')).href)};
    let release;
    process.on('message', (m) => {
      if (m.release) { release?.(); release = undefined; process.send({ released: true }); return; }
      while (Date.now() < m.at) {}
      try { release = lockOutputFolder(m.dir, 'trial'); process.send({ held: true }); }
      catch (err) { process.send({ held: false, error: err.name }); }
    });`,
  );
  const workers = Array.from({ length: 4 }, () => fork(worker, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  const ask = (w, m) =>
    new Promise((resolve) => {
      w.once('message', resolve);
      w.send(m);
    });
  const deadPid = spawnSync(process.execPath, ['-e', '0']).pid; // gone: a lock naming it is stale
  const { hostname } = await import('node:os');
  try {
    const failures = [];
    for (let trial = 0; trial < 60; trial++) {
      const d = join(dir, `lock-trial-${trial}`);
      mkdirSync(d);
      if (trial % 2 === 1)
        writeFileSync(join(d, '.time-edit.lock'), JSON.stringify({ pid: deadPid, host: hostname(), what: 'killed run' }));
      const at = Date.now() + 40;
      const results = await Promise.all(workers.map((w) => ask(w, { dir: d, at })));
      const holders = results.filter((r) => r.held).length;
      const refusedOther = results.filter((r) => !r.held && r.error !== 'OutputInUseError');
      if (holders !== 1 || refusedOther.length > 0) failures.push({ trial, results });
      await Promise.all(workers.map((w) => ask(w, { release: true })));
      assert.equal(existsSync(join(d, '.time-edit.lock')), false, 'released lock removed');
      assert.deepEqual(readdirSync(d), [], 'no temporary or guard file left');
    }
    assert.deepEqual(failures, [], `${failures.length} of 60 trials did not have exactly one holder`);
  } finally {
    for (const w of workers) w.kill();
  }
});

test('E: a lock that exists but is still empty is being written, not stale', async () => {
  const { lockOutputFolder } = await import('../lib/fs/out-lock.js');
  const d = join(dir, 'lock-empty');
  mkdirSync(d);
  const lock = join(d, '.time-edit.lock');
  writeFileSync(lock, '');
  // Its creator (an older writer: create, then write) fills it in a moment later; it is alive.
  const child = spawn(process.execPath, [
    '-e',
    `setTimeout(() => require('fs').writeFileSync(${JSON.stringify(lock)}, JSON.stringify({ pid: process.pid, host: require('os').hostname(), what: 'slow writer' })), 300); setTimeout(() => {}, 20000)`,
  ]);
  try {
    assert.throws(
      () => lockOutputFolder(d, 'second'),
      (err) => err.name === 'OutputInUseError' && /slow writer/.test(err.message),
    );
  } finally {
    child.kill();
  }
});

/** A 64 KiB tmpfs mounted in a fresh folder (a disk that fills up), or undefined where mounting is not permitted. */
function tinyDisk(name) {
  const mnt = join(dir, name);
  mkdirSync(mnt);
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { encoding: 'utf8' });
  return r.status === 0 ? mnt : undefined;
}
const unmount = (mnt) => spawnSync('umount', [mnt]);
const canMount = (() => {
  const probe = mkdtempSync(join(tmpdir(), 'mount-probe-'));
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]).status === 0;
  if (ok) spawnSync('umount', [probe]);
  rmSync(probe, { recursive: true, force: true });
  return ok;
})();
const mountSkip = canMount ? false : 'mounting a tmpfs is not permitted here (needs root)';

test('F: generate on a disk that fills up writes no image at all, and the message names the file', {
  skip: mountSkip,
  timeout: 120000,
}, () => {
  const mnt = tinyDisk('full-gen');
  try {
    // 13 of the 16 pages taken: room for about three of the eight 2 KB PNGs.
    writeFileSync(join(mnt, 'filler'), Buffer.alloc(13 * 4096, 1));
    const out = join(mnt, 'out');
    const r = run(['generate', 'a circle', '--seeds', '0-7', '--steps', '2', '--out', out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`cannot write ${out}/0\\d-a-circle-seed\\d\\.png: ENOSPC: no space left on device`));
    assert.deepEqual(existsSync(out) ? readdirSync(out) : [], [], 'no image and no temporary file left');
    // With room, the same command writes all eight.
    rmSync(join(mnt, 'filler'));
    const ok = run(['generate', 'a circle', '--seeds', '0-7', '--steps', '2', '--out', out]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(readdirSync(out).length, 8);
  } finally {
    unmount(mnt);
  }
});

test('F: writeFileAtomic and writeFileAtomicSync name the file on ENOSPC and leave nothing behind', { skip: mountSkip }, async () => {
  const mnt = tinyDisk('full-write');
  try {
    const target = join(mnt, 'sub', 'big.bin');
    const data = Buffer.alloc(128 * 1024, 7);
    await assert.rejects(
      writeFileAtomic(target, data),
      (err) => err.code === 'ENOSPC' && err.message === `cannot write ${target}: ENOSPC: no space left on device`,
    );
    assert.throws(
      () => writeFileAtomicSync(target, data),
      (err) => err.code === 'ENOSPC' && err.message === `cannot write ${target}: ENOSPC: no space left on device`,
    );
    assert.deepEqual(readdirSync(join(mnt, 'sub')), []);
  } finally {
    unmount(mnt);
  }
});

const batchLines = [
  { source: 'a circle', destination: 'a blue circle' },
  { source: 'a square', destination: 'a red square', onlyV: true },
  { source: 'a star', destination: 'a green star', augmentations: false },
];

test('C: edit --batch resume parses every kept edit file: a truncated or corrupt one is recomputed, saying so', { timeout: 120000 }, () => {
  const file = join(dir, 'resume.jsonl');
  writeFileSync(file, `${batchLines.map((l) => JSON.stringify(l)).join('\n')}\n`);
  const out = join(dir, 'resume');
  let r = run(['edit', '--batch', file, '--out', out, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const edit = (n) => join(out, 'edits', `line-0000${n}.safetensors`);
  const intact = readFileSync(edit(2));
  writeFileSync(edit(2), intact.subarray(0, intact.length >> 1)); // cut short, as by a full disk or a kill
  const bad3 = Buffer.from(readFileSync(edit(3)));
  bad3.writeFloatLE(NaN, bad3.length - 4);
  writeFileSync(edit(3), bad3);
  r = run(['edit', '--batch', file, '--out', out, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.deepEqual([s.skipped, s.ok, s.repaired], [1, 2, 2]);
  assert.match(r.stderr, /warning: line 2: its edit file .*line-00002\.safetensors is damaged \(.*\); computing it again/);
  assert.match(r.stderr, /warning: line 3: its edit file .*line-00003\.safetensors is damaged \(.*value NaN.*\); computing it again/);
  assert.deepEqual(readFileSync(edit(2)), intact, 'recomputed to the same bytes');
  for (const n of [1, 2, 3]) decodeSafetensors(readFileSync(edit(n)));
});

/** The system calls of a command (strace -f), each as one completed line, or undefined where strace cannot run. */
function traced(args) {
  const log = join(dir, `strace-${Date.now()}.log`);
  const r = spawnSync(
    'strace',
    [
      '-f',
      '-qq',
      '-e',
      'trace=openat,fsync,rename,renameat,renameat2,write,close',
      '-s',
      '100000',
      '-o',
      log,
      process.execPath,
      cli,
      ...args,
    ],
    { encoding: 'utf8', timeout: 120000 },
  );
  if (r.error || !existsSync(log)) return undefined;
  const pending = new Map();
  const calls = [];
  for (const raw of readFileSync(log, 'utf8').split('\n')) {
    const m = /^(\d+) +(.*)$/.exec(raw);
    if (!m) continue;
    const [, pid, rest] = m;
    if (rest.endsWith('<unfinished ...>')) pending.set(pid, rest.slice(0, -'<unfinished ...>'.length));
    else if (rest.startsWith('<... ')) calls.push(pending.get(pid) + rest.replace(/^<\.\.\. \w+ resumed>/, ''));
    else calls.push(rest);
  }
  return { status: r.status, stderr: r.stderr, calls };
}
const canTrace = spawnSync('strace', ['-f', '-qq', '-o', '/dev/null', 'true']).status === 0;

test('C: each edit file is fsynced before its rename, the folder after the renames, and only then is its ok row appended', {
  skip: canTrace ? false : 'strace is not available or ptrace is not permitted',
  timeout: 120000,
}, () => {
  const file = join(dir, 'order.jsonl');
  const lines = Array.from({ length: 40 }, (_, i) => batchLines[i % 3]).map((l, i) => ({ ...l, lambda: 0.1 + i / 100 }));
  writeFileSync(file, `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);
  const out = join(dir, 'order');
  const t = traced(['edit', '--batch', file, '--out', out]);
  assert.equal(t.status, 0, t.stderr);
  const editsDir = join(out, 'edits');
  const fds = new Map();
  const synced = new Set();
  const renamedAt = new Map(); // final edit file → index of its rename
  let lastFolderSync = -1;
  let checkedRows = 0;
  t.calls.forEach((c, i) => {
    let m;
    if ((m = /^openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+).*\) = (\d+)$/.exec(c)))
      fds.set(m[3], { path: m[1], append: m[2].includes('O_APPEND') });
    else if ((m = /^close\((\d+)\)/.exec(c))) fds.delete(m[1]);
    else if ((m = /^fsync\((\d+) ?\) += 0$/.exec(c))) {
      const f = fds.get(m[1]);
      if (f?.path === editsDir) lastFolderSync = i;
      else if (f) synced.add(f.path);
    } else if ((m = /^rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"/.exec(c)) && m[2].startsWith(editsDir)) {
      assert.ok(synced.has(m[1]), `${m[1]} renamed before its fsync`);
      renamedAt.set(m[2], i);
    } else if ((m = /^write\((\d+), "(.*)", \d+\)/.exec(c)) && fds.get(m[1])?.append && fds.get(m[1]).path === join(out, 'results.jsonl')) {
      for (const [, n] of m[2].matchAll(/\\"line\\":(\d+),[^\n]*?\\"status\\":\\"ok\\"/g)) {
        const final = join(editsDir, `line-${String(n).padStart(5, '0')}.safetensors`);
        assert.ok(renamedAt.has(final) && renamedAt.get(final) < i, `row of line ${n} appended before its edit file was in place`);
        assert.ok(lastFolderSync > renamedAt.get(final), `row of line ${n} appended before the folder was fsynced`);
        checkedRows++;
      }
    }
  });
  assert.equal(checkedRows, 40, 'every ok row was seen and checked');
});

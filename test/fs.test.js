// lib/fs: the one atomic write (exact bytes, replacement by rename, no temporary file left on failure, errors that
// name the file), the run log both resumable commands keep (torn last line, damaged lines, header, settings
// differences by key), the JSON readers, prompt slugs, and the CLI's progress bar.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendDurably, openAtomicFileSync, writeFileAtomic, writeFileAtomicSync, writeFilesAtomic } from '../lib/fs/durable-file.js';
import { FileError } from '../lib/fs/file-error.js';
import { appendToLog, logHeaderOf, parseLogText, readLogFile, settingDifferences, writeLog } from '../lib/fs/run-log.js';
import { isDirectory, isFile, readJsonFile, readJsonObject } from '../lib/fs/json-file.js';
import { promptSlug } from '../lib/fs/file-name.js';
import { progressBar } from '../lib/cli/progress.js';

function withDir(fn) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fs-'));
    try {
      await fn(dir);
    } finally {
      chmodSync(dir, 0o755);
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

const writers = [
  ['writeFileAtomicSync', async (p, b) => writeFileAtomicSync(p, b)],
  ['writeFileAtomic', (p, b) => writeFileAtomic(p, b)],
];

for (const [name, write] of writers) {
  test(
    `${name}: exact bytes, parent folders created, no temporary file left`,
    withDir(async (dir) => {
      const bytes = randomBytes(100_003);
      const path = join(dir, 'a', 'b', 'x.bin');
      await write(path, bytes);
      assert.ok(readFileSync(path).equals(bytes));
      assert.deepEqual(readdirSync(join(dir, 'a', 'b')), ['x.bin']);
      await write(join(dir, 'empty'), new Uint8Array(0));
      assert.equal(readFileSync(join(dir, 'empty')).length, 0);
      await write(join(dir, 'text'), 'λ = 0.1\n');
      assert.deepEqual(readFileSync(join(dir, 'text')), Buffer.from([0xce, 0xbb, 0x20, 0x3d, 0x20, 0x30, 0x2e, 0x31, 0x0a]));
    }),
  );

  test(
    `${name}: replaces an existing file by rename (a reader of the old file keeps the old bytes)`,
    withDir(async (dir) => {
      const path = join(dir, 'x.txt');
      writeFileSync(path, 'old contents');
      const fd = openSync(path, 'r');
      try {
        await write(path, 'new');
        assert.equal(readFileSync(path, 'utf8'), 'new');
        const buf = Buffer.alloc(32);
        const n = readSync(fd, buf, 0, buf.length, 0);
        assert.equal(buf.subarray(0, n).toString(), 'old contents', 'the old file was replaced, not truncated and rewritten');
      } finally {
        closeSync(fd);
      }
      assert.deepEqual(readdirSync(dir), ['x.txt']);
    }),
  );

  test(
    `${name}: a failed write names the path and leaves no temporary file`,
    withDir(async (dir) => {
      // The parent is a file: no folder can be made.
      writeFileSync(join(dir, 'file'), 'x');
      const underFile = join(dir, 'file', 'x.png');
      await assert.rejects(
        async () => write(underFile, 'data'),
        (err) => {
          assert.ok(err instanceof FileError, String(err));
          assert.equal(err.path, underFile);
          assert.match(err.message, new RegExp(`^cannot write ${underFile}: .*file exists and is not a folder`));
          return true;
        },
      );
      // The target is a folder: the temporary file is written, the rename fails, and the temporary file goes.
      mkdirSync(join(dir, 'folder'));
      writeFileSync(join(dir, 'folder', 'inside'), 'kept');
      await assert.rejects(
        async () => write(join(dir, 'folder'), randomBytes(1000)),
        (err) => {
          assert.ok(err instanceof FileError);
          assert.match(err.message, new RegExp(`^cannot write ${join(dir, 'folder')}: E[A-Z]+: `));
          assert.doesNotMatch(err.message, /\.tmp/, 'the message names the file asked for, not the temporary one');
          assert.ok(['EISDIR', 'ENOTEMPTY', 'EEXIST', 'EPERM'].includes(err.code), err.code);
          return true;
        },
      );
      assert.deepEqual(readdirSync(dir).sort(), ['file', 'folder']);
      assert.deepEqual(readdirSync(join(dir, 'folder')), ['inside']);
    }),
  );

  test(
    `${name}: a read-only folder is refused with EACCES, nothing left behind`,
    {
      skip: process.getuid?.() === 0 ? 'root ignores folder permissions' : false,
    },
    withDir(async (dir) => {
      const ro = join(dir, 'ro');
      mkdirSync(ro);
      chmodSync(ro, 0o555);
      try {
        await assert.rejects(async () => write(join(ro, 'x'), 'data'), {
          name: 'FileError',
          code: 'EACCES',
          message: `cannot write ${join(ro, 'x')}: EACCES: permission denied`,
        });
        assert.deepEqual(readdirSync(ro), []);
      } finally {
        chmodSync(ro, 0o755);
      }
    }),
  );
}

test(
  'openAtomicFileSync: nothing appears until commit; discard removes the temporary file',
  withDir((dir) => {
    const a = openAtomicFileSync(join(dir, 'a.bin'));
    writeSync(a.fd, Buffer.from('zz'), 0, 2, 6); // positional writes, as saveModel's aligned external data
    assert.equal(readdirSync(dir).filter((n) => n === 'a.bin').length, 0);
    assert.match(readdirSync(dir)[0], /^\.a\.bin\.\d+\.[0-9a-f]{8}\.tmp$/, 'the temporary sibling is .<name>.<pid>.<random>.tmp');
    a.commit();
    assert.deepEqual(readFileSync(join(dir, 'a.bin')), Buffer.from([0, 0, 0, 0, 0, 0, 0x7a, 0x7a]));
    a.discard(); // after commit: nothing to do
    assert.deepEqual(readdirSync(dir), ['a.bin']);
    const b = openAtomicFileSync(join(dir, 'b.bin'));
    writeSync(b.fd, 'x');
    b.discard();
    assert.deepEqual(readdirSync(dir), ['a.bin']);
  }),
);

test(
  'appendDurably: appends whole lines; a failure names the file',
  withDir((dir) => {
    const path = join(dir, 'log.jsonl');
    appendDurably(path, 'one\n');
    appendDurably(path, 'two\n');
    assert.equal(readFileSync(path, 'utf8'), 'one\ntwo\n');
    assert.throws(() => appendDurably(join(dir, 'missing', 'log.jsonl'), 'x\n'), {
      name: 'FileError',
      code: 'ENOENT',
      message: `cannot append to ${join(dir, 'missing', 'log.jsonl')}: ENOENT: no such file or directory`,
    });
  }),
);

test('run log: a torn last line is set aside; other lines that are not JSON come back with the reason', () => {
  assert.deepEqual(parseLogText('{"a":1}\n\n{"a":2}\n{"a":'), {
    lines: [
      { no: 1, text: '{"a":1}', value: { a: 1 } },
      { no: 3, text: '{"a":2}', value: { a: 2 } },
    ],
    tornLine: 4,
  });
  const damaged = parseLogText('{"a":1}\n{oops\n{"a":3}\n');
  assert.equal(damaged.tornLine, undefined);
  assert.deepEqual(
    damaged.lines.map((l) => [l.no, l.value]),
    [
      [1, { a: 1 }],
      [2, undefined],
      [3, { a: 3 }],
    ],
  );
  assert.match(damaged.lines[1].error, /JSON/);
  assert.deepEqual(parseLogText(''), { lines: [] });
  assert.deepEqual(parseLogText('{"log":"x'), { lines: [], tornLine: 1 });
});

test(
  'run log: written with a header, appended, read back; a torn append is dropped by the next rewrite',
  withDir((dir) => {
    const path = join(dir, 'results.jsonl');
    assert.equal(readLogFile(path), undefined, 'no file, no log');
    const settings = { steps: 2, seeds: [0, 1] };
    writeLog(path, [{ i: 0 }], { log: 'test log', format: 1, settings });
    appendToLog(path, { i: 1, s: 'é' });
    assert.equal(
      readFileSync(path, 'utf8'),
      '{"log":"test log","format":1,"settings":{"steps":2,"seeds":[0,1]}}\n{"i":0}\n{"i":1,"s":"é"}\n',
    );
    writeFileSync(path, `${readFileSync(path, 'utf8')}{"i":2,"s"`);
    const log = readLogFile(path);
    assert.equal(log.tornLine, 4);
    assert.deepEqual(logHeaderOf(log.lines[0].value, 'test log'), { log: 'test log', format: 1, settings });
    assert.equal(logHeaderOf(log.lines[0].value, 'another log'), undefined);
    assert.equal(logHeaderOf(log.lines[1].value, 'test log'), undefined);
    writeLog(
      path,
      log.lines.slice(1).map((l) => l.value),
    );
    assert.equal(readFileSync(path, 'utf8'), '{"i":0}\n{"i":1,"s":"é"}\n');
    assert.deepEqual(readdirSync(dir), ['results.jsonl']);
  }),
);

test('run log: settings differences are reported by key; only the keys given now are compared', () => {
  const recorded = { steps: 2, seeds: [0, 1], lambda: 0.1, model: '/m' };
  assert.deepEqual(settingDifferences(recorded, { steps: 2, seeds: [0, 1] }), []);
  assert.deepEqual(settingDifferences(recorded, { seeds: [0, 1, 2], steps: 3, lambda: 0.1, judge: 'clip' }), [
    { key: 'seeds', recorded: [0, 1], current: [0, 1, 2] },
    { key: 'steps', recorded: 2, current: 3 },
    { key: 'judge', recorded: undefined, current: 'clip' },
  ]);
  assert.deepEqual(settingDifferences({ x: null }, { x: null }), []);
});

test(
  'JSON files: objects and any JSON read back; failures are FileErrors naming the file',
  withDir(async (dir) => {
    writeFileSync(join(dir, 'a.json'), '{"x":[1,2]}');
    writeFileSync(join(dir, 'list.json'), '[1,2]');
    writeFileSync(join(dir, 'bad.json'), '{"x":');
    assert.deepEqual(await readJsonObject(join(dir, 'a.json')), { x: [1, 2] });
    assert.deepEqual(await readJsonFile(join(dir, 'list.json')), [1, 2]);
    await assert.rejects(readJsonObject(join(dir, 'list.json')), {
      name: 'FileError',
      message: `${join(dir, 'list.json')} must hold a JSON object`,
    });
    await assert.rejects(
      readJsonObject(join(dir, 'bad.json')),
      (err) =>
        err instanceof FileError &&
        err.path === join(dir, 'bad.json') &&
        err.message.startsWith(`${join(dir, 'bad.json')} is not valid JSON: `),
    );
    await assert.rejects(readJsonFile(join(dir, 'none.json')), {
      name: 'FileError',
      code: 'ENOENT',
      message: new RegExp(`^cannot read ${join(dir, 'none.json')}: ENOENT`),
    });
    assert.deepEqual([await isFile(join(dir, 'a.json')), await isFile(dir), await isFile(join(dir, 'none'))], [true, false, false]);
    assert.deepEqual(
      [await isDirectory(dir), await isDirectory(join(dir, 'a.json')), await isDirectory(join(dir, 'none'))],
      [true, false, false],
    );
  }),
);

test('promptSlug: lower case, one dash per run of other characters, cut to the length given, "empty" when nothing is left', () => {
  assert.equal(promptSlug('A purple  circle!', 60), 'a-purple-circle');
  assert.equal(promptSlug('  --Ünïcode only--  ', 60), 'n-code-only');
  assert.equal(promptSlug('!!!', 50), 'empty');
  const long = 'a photo of a very large purple circle on a white background, centred';
  assert.equal(promptSlug(long, 60), 'a-photo-of-a-very-large-purple-circle-on-a-white-background-');
  assert.equal(promptSlug(long, 50), 'a-photo-of-a-very-large-purple-circle-on-a-white-b');
});

test('progressBar: nothing when the stream is not a terminal; on a terminal, the 30-column bar with label, unit and rate', () => {
  const written = [];
  const tty = { isTTY: true, write: (s) => written.push(s) };
  assert.equal(progressBar('lines', { stream: { isTTY: false, write: () => assert.fail('wrote to a pipe') } }), undefined);
  const bar = progressBar('UNet calls', { label: 'before', stream: tty });
  bar(1, 3);
  bar(3, 3);
  assert.deepEqual(written, [
    `\rbefore [${'#'.repeat(10)}${'.'.repeat(20)}] 1/3 UNet calls `,
    `\rbefore [${'#'.repeat(30)}] 3/3 UNet calls `,
    '\n',
  ]);
  written.length = 0;
  const rated = progressBar('lines', { rate: 'lines', stream: tty });
  rated(0, 0);
  assert.deepEqual(written, [`\r[${'#'.repeat(30)}] 0/0 lines, 0.0 lines/s `, '\n'], 'an empty run is drawn full and ended');
  written.length = 0;
  progressBar('UNet calls', { rate: true, stream: tty })(2, 4);
  assert.match(written[0], /^\r\[#{15}\.{15}\] 2\/4 UNet calls, \d+\.\d\/s $/);
});

test('writeFilesAtomic: a failed rename puts back the files it replaced and removes the new ones', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'time-edit-fs-'));
  try {
    writeFileSync(join(dir, 'a.png'), 'old a');
    // The second target is a non-empty folder: staging succeeds, its rename fails after a.png was replaced.
    mkdirSync(join(dir, 'b.png'));
    writeFileSync(join(dir, 'b.png', 'keep'), 'x');
    await assert.rejects(
      () =>
        writeFilesAtomic([
          { path: join(dir, 'a.png'), data: 'new a' },
          { path: join(dir, 'c.png'), data: 'c' },
          { path: join(dir, 'b.png'), data: 'b' },
        ]),
      (err) => err instanceof FileError && err.message.startsWith(`cannot write ${join(dir, 'b.png')}:`),
    );
    assert.equal(readFileSync(join(dir, 'a.png'), 'utf8'), 'old a');
    assert.deepEqual(readdirSync(dir).sort(), ['a.png', 'b.png']);
    await writeFilesAtomic([
      { path: join(dir, 'a.png'), data: 'new a' },
      { path: join(dir, 'c.png'), data: 'c' },
    ]);
    assert.equal(readFileSync(join(dir, 'a.png'), 'utf8'), 'new a');
    assert.deepEqual(readdirSync(dir).sort(), ['a.png', 'b.png', 'c.png']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

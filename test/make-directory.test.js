// makeDirectory: mkdir -p that names its failures instead of hanging (Node's recursive mkdir loops forever when
// the parent exists and creating the child fails with ENOENT, as under /proc).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirectory } from '../lib/fs/make-directory.js';

test('makeDirectory creates missing parents, accepts existing folders, names a file in the way', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mkdir-'));
  try {
    makeDirectory(join(dir, 'a', 'b', 'c'));
    assert.ok(statSync(join(dir, 'a', 'b', 'c')).isDirectory());
    makeDirectory(join(dir, 'a', 'b'));
    writeFileSync(join(dir, 'file'), 'x');
    assert.throws(() => makeDirectory(join(dir, 'file', 'sub')), /cannot create the folder .*file\/sub: .*file exists and is not a folder/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a folder that cannot be made under an existing parent fails at once (Node's recursive mkdir hangs there)", {
  skip: existsSync('/proc/self') ? false : 'needs /proc',
}, () => {
  const r = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', "import('./lib/fs/make-directory.js').then((m) => m.makeDirectory('/proc/time-edit-test/x'))"],
    { encoding: 'utf8', timeout: 20000 },
  );
  assert.equal(r.signal, null, 'it hung (killed by the timeout)');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cannot create the folder \/proc\/time-edit-test\/x: ENOENT/);
  const cli = spawnSync(process.execPath, ['lib/cli.js', 'generate', 'a circle', '--steps', '1', '--out', '/proc/time-edit-test'], {
    encoding: 'utf8',
    timeout: 60000,
  });
  assert.equal(cli.signal, null, 'generate --out /proc/… hung');
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(cli.stderr, /^time-edit: cannot create the folder \/proc\/time-edit-test: ENOENT/);
});

// The layer rule (docs/architecture.md) holds for this tree, and the check really fails when an import points up:
// a copy of lib/ gets one forbidden import at a time and scripts/check-layers.js must name the broken rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const repo = new URL('..', import.meta.url).pathname;
const check = (dir) => spawnSync(process.execPath, [join(repo, 'scripts', 'check-layers.js'), ...(dir ? [dir] : [])], { encoding: 'utf8' });

test('this tree keeps the layer rule', () => {
  const r = check();
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

const violations = [
  ['lib/sample/noise.ts', "import '../edit/edit.js';", 'sample-not-above'],
  ['lib/model/tokenizer.ts', "import '../cli/errors.js';", 'library-not-cli'],
  ['lib/fs/make-directory.ts', "import '../model/paths.js';", 'fs-imports-only-errors'],
  ['lib/errors.ts', "import './fs/make-directory.js';", 'errors-is-the-bottom'],
  ['lib/edit/edit.ts', "import '../index.js';", 'index-is-not-imported'],
  ['lib/fs/make-directory.ts', "import './out-lock.js';", 'no-cycles', 'lib/fs/out-lock.ts', "import './make-directory.js';"],
];
for (const [file, line, rule, file2, line2] of violations) {
  test(`an import that breaks ${rule} fails the check`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'time-edit-layers-test-'));
    try {
      cpSync(join(repo, 'lib'), join(dir, 'lib'), { recursive: true, filter: (s) => !s.endsWith('.js') && !s.endsWith('.d.ts') });
      cpSync(join(repo, 'tsconfig.json'), join(dir, 'tsconfig.json'));
      appendFileSync(join(dir, file), `\n${line}\n`);
      if (file2) appendFileSync(join(dir, file2), `\n${line2}\n`);
      const r = check(dir);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, new RegExp(`error ${rule}:`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

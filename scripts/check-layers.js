#!/usr/bin/env node
// The layer rule of docs/architecture.md, checked with dependency-cruiser (.dependency-cruiser.cjs holds the rules).
// It cruises the TypeScript sources only: tsc writes lib/**/*.js beside them and imports name './x.js', which
// dependency-cruiser would resolve to the compiled file, so the .ts files are copied to a temporary folder first.
// `npm test` runs this before the tests; `node scripts/check-layers.js` runs it alone (exit 1 on a violation), and
// `node scripts/check-layers.js DIR` checks the lib/ of another tree (test/layers.test.js breaks a rule in a copy).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const root = process.argv[2] ?? repo;
let cli;
try {
  // The package exports neither package.json nor its bin: find its folder from the main entry (src/main/index.mjs).
  const main = fileURLToPath(import.meta.resolve('dependency-cruiser'));
  cli = join(dirname(main), '..', '..', 'bin', 'dependency-cruise.mjs');
} catch {
  console.error('check-layers: dependency-cruiser is not installed (it is a devDependency: run npm install)');
  process.exit(1);
}
const work = mkdtempSync(join(tmpdir(), 'time-edit-layers-'));
try {
  cpSync(join(root, 'lib'), join(work, 'lib'), {
    recursive: true,
    filter: (src) => !src.endsWith('.js') && !src.endsWith('.d.ts'),
  });
  cpSync(join(root, 'tsconfig.json'), join(work, 'tsconfig.json'));
  const r = spawnSync(process.execPath, [cli, 'lib', '--config', join(repo, '.dependency-cruiser.cjs'), '--output-type', 'err'], {
    cwd: work,
    stdio: 'inherit',
  });
  process.exitCode = r.status === 0 ? 0 : 1; // dependency-cruiser exits with the number of violations
} finally {
  rmSync(work, { recursive: true, force: true });
}

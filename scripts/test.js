#!/usr/bin/env node
// `npm test`: build what is missing, check the layer rule (scripts/check-layers.js), then run every
// test/**/*.test.js with node's test runner.
// Extra arguments are passed through as file filters: `npm test -- solver` runs the files whose path contains "solver".
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const build = spawnSync(process.execPath, [join(root, 'scripts', 'build.js')], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
const layers = spawnSync(process.execPath, [join(root, 'scripts', 'check-layers.js')], { cwd: root, stdio: 'inherit' });
if (layers.status !== 0) {
  console.error('test: the layer rule of docs/architecture.md is broken (see above); no tests were run');
  process.exit(layers.status ?? 1);
}

function collect(dir) {
  const files = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...collect(p));
    else if (entry.name.endsWith('.test.js')) files.push(relative(root, p));
  }
  return files.sort();
}
const filters = process.argv.slice(2);
const files = collect(join(root, 'test')).filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error('test: no test files matched');
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);

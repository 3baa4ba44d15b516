#!/usr/bin/env node
// Builds what is missing (or everything with --force): the native addon with cmake-js, then the TypeScript in lib/.
// `npm install` runs this; `npm test` runs it before the tests so a fresh checkout needs one command.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const args = new Set(process.argv.slice(2));
const force = args.has('--force');
const onlyTs = args.has('--ts-only');
const onlyNative = args.has('--native-only');

function run(cmd, cmdArgs) {
  const result = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`build: '${[cmd, ...cmdArgs].join(' ')}' failed (exit ${result.status ?? result.signal})`);
    process.exit(1);
  }
}

function newestMtime(dir, accept) {
  let newest = 0;
  if (!existsSync(dir)) return newest;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p, accept));
    else if (accept(entry.name)) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

const addon = join(root, 'build', 'Release', 'time_edit.node');
if (!onlyTs) {
  const nativeSources = Math.max(newestMtime(join(root, 'native'), () => true), statSync(join(root, 'CMakeLists.txt')).mtimeMs);
  if (force || !existsSync(addon) || statSync(addon).mtimeMs < nativeSources) {
    const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
    run(process.execPath, [cmakeJs, 'compile', '--out', 'build']);
  }
}
if (!onlyNative) {
  const isTs = (n) => n.endsWith('.ts') && !n.endsWith('.d.ts');
  const isJs = (n) => n.endsWith('.js');
  const libDir = join(root, 'lib');
  if (force || newestMtime(libDir, isTs) > newestMtime(libDir, isJs) || !existsSync(join(libDir, 'cli.js'))) {
    const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
    run(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')]);
  }
}

#!/usr/bin/env node
// Builds what is missing (or everything with --force): the native addon with cmake-js, then the TypeScript in lib/.
// `npm install` in a git checkout runs this (through scripts/install.js), `npm run build` runs it with --force,
// and `npm test` runs it before the tests so a fresh checkout needs one command.
//
// Every native build configures again before it compiles: CMake searches again for what it did not find last
// time, so OpenBLAS/LAPACKE installed after a portable build are picked up by `npm run build` (cmake-js's own
// `compile` skips the configure step once build/ exists, which kept the portable kernels).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const args = new Set(process.argv.slice(2));
const force = args.has('--force');
const onlyTs = args.has('--ts-only');
const onlyNative = args.has('--native-only');

/** What a source build of the addon needs, as one line (also printed by scripts/install.js). */
export const BUILD_NEEDS =
  'cmake, a C++17 compiler and, for the fast kernels, OpenBLAS + LAPACKE ' +
  '(Debian/Ubuntu: apt-get install cmake g++ libopenblas-dev liblapacke-dev)';

function run(cmd, cmdArgs) {
  const result = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit' });
  return result.status === 0;
}

function runOrExit(cmd, cmdArgs) {
  if (!run(cmd, cmdArgs)) {
    console.error(`build: '${[cmd, ...cmdArgs].join(' ')}' failed`);
    process.exit(1);
  }
}

/** Whether an executable of that name is on PATH (what cmake-js and CMake will look for). */
function onPath(name) {
  const exts = process.platform === 'win32' ? (process.env.PATHEXT ?? '.EXE').split(';') : [''];
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && exts.some((ext) => existsSync(join(dir, name + ext))));
}

/** The tools a source build needs that are missing here: [] when it can be tried. */
export function missingBuildTools() {
  if (process.platform === 'win32') return []; // Visual Studio is found by cmake-js, not on PATH
  const missing = [];
  if (!onPath('cmake')) missing.push('cmake');
  const compilers = [process.env.CXX, 'c++', 'g++', 'clang++'].filter((c) => c !== undefined && c !== '');
  if (!compilers.some((c) => (c.includes('/') ? existsSync(c) : onPath(c)))) missing.push('a C++17 compiler');
  return missing;
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

function buildNative() {
  const missing = missingBuildTools();
  if (missing.length > 0) {
    console.error(`build: cannot build the native addon: ${missing.join(' and ')} not found; it needs ${BUILD_NEEDS}`);
    process.exit(1);
  }
  const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  if (run(process.execPath, [cmakeJs, 'configure', '--out', 'build']) && run(process.execPath, [cmakeJs, 'build', '--out', 'build'])) {
    return;
  }
  // A build folder from another generator or an older layout: start it afresh once (what `cmake-js compile` does).
  console.error('build: retrying from an empty build/ folder');
  runOrExit(process.execPath, [cmakeJs, 'rebuild', '--out', 'build']);
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  const addon = join(root, 'build', 'Release', 'time_edit.node');
  if (!onlyTs) {
    const nativeSources = Math.max(
      newestMtime(join(root, 'native'), () => true),
      statSync(join(root, 'CMakeLists.txt')).mtimeMs,
    );
    if (force || !existsSync(addon) || statSync(addon).mtimeMs < nativeSources) buildNative();
  }
  // The published package ships lib/**/*.js without the .ts sources (and without typescript): nothing to compile.
  if (!onlyNative && existsSync(join(root, 'lib', 'cli.ts'))) {
    const isTs = (n) => n.endsWith('.ts') && !n.endsWith('.d.ts');
    const isJs = (n) => n.endsWith('.js');
    const libDir = join(root, 'lib');
    if (force || newestMtime(libDir, isTs) > newestMtime(libDir, isJs) || !existsSync(join(libDir, 'cli.js'))) {
      const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
      runOrExit(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')]);
    }
  }
}

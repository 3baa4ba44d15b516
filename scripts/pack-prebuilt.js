#!/usr/bin/env node
// `prepack` (npm pack / npm publish): makes what the package ships so that installing it needs no compiler,
// no CMake, no OpenBLAS and no install script: the compiled JS of lib/ and, on Linux, a prebuilt addon
// prebuilds/<platform>-<arch>/time_edit.node with OpenBLAS and LAPACKE linked in statically (both BSD-licensed:
// their notices are copied beside it, docs/install.md). The addon is built in build-prebuilt/ so build/ (the
// developer's source build, which lib/solver/addon-location.ts prefers) is left alone, and it is checked before
// it is kept: it must load, use OpenBLAS, need no shared library beyond the C/C++ runtime, and leave no symbol
// undefined beyond Node-API's and that runtime's (Node loads addons lazily: a missing one would fail at a call).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const platform = `${process.platform}-${process.arch}`;
const buildDir = 'build-prebuilt';
const prebuildsDir = join(root, 'prebuilds');
const target = join(prebuildsDir, platform, 'time_edit.node');
/** Shared libraries the prebuilt may need: glibc's, libstdc++ and libgcc_s, present on any Linux with Node. */
const allowedLibraries = /^(linux-vdso|libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so/;
/** Undefined symbols it may have: Node-API's (from node itself) and versioned ones of glibc, libstdc++, libgcc. */
const allowedUndefined = /^napi_|@(GLIBC|GLIBCXX|CXXABI|GCC)_/;
/** Debian's license files of the archives linked in, shipped beside the addon as BSD's binary clause asks. */
const notices = { OpenBLAS: '/usr/share/doc/libopenblas-pthread-dev/copyright', LAPACKE: '/usr/share/doc/liblapacke-dev/copyright' };

function run(cmd, args) {
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) fail(`'${[cmd, ...args].join(' ')}' failed`);
}

function fail(message) {
  console.error(`pack-prebuilt: ${message}`);
  process.exit(1);
}

// The compiled JS first: the tarball's lib/**/*.js must match the sources being packed.
run(process.execPath, [join(root, 'scripts', 'build.js'), '--ts-only', '--force']);

rmSync(prebuildsDir, { recursive: true, force: true });
if (process.platform !== 'linux') {
  console.log(`pack-prebuilt: no prebuilt addon for ${platform} (Linux only); the package builds it from source at install`);
  process.exit(0);
}

const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
run(process.execPath, [
  cmakeJs,
  'rebuild',
  '--out',
  buildDir,
  '--CDTIME_EDIT_STATIC_BLAS=ON',
  '--CDTIME_EDIT_CUDA=OFF',
  '--CDTIME_EDIT_BUILD_TESTS=OFF',
]);
mkdirSync(dirname(target), { recursive: true });
copyFileSync(join(root, buildDir, 'Release', 'time_edit.node'), target);
// Symbols are not needed to run it, and they are most of the file.
spawnSync('strip', ['--strip-unneeded', target], { stdio: 'inherit' });

const ldd = spawnSync('ldd', [target], { encoding: 'utf8' });
if (ldd.status !== 0) fail(`ldd ${target} failed: ${ldd.stderr}`);
const needed = ldd.stdout
  .split('\n')
  .map((line) => line.trim().split(/\s+/)[0])
  .filter((name) => name);
const extra = needed.filter((name) => !allowedLibraries.test(name.split('/').pop()));
if (extra.length > 0) fail(`${target} needs ${extra.join(', ')}: it would not load where they are missing`);

const nm = spawnSync('nm', ['-D', '--undefined-only', target], { encoding: 'utf8' });
if (nm.status !== 0) fail(`nm ${target} failed: ${nm.stderr}`);
const undefinedSymbols = nm.stdout
  .split('\n')
  .map((line) => line.trim().split(/\s+/))
  .filter(([type, name]) => type === 'U' && !allowedUndefined.test(name))
  .map(([, name]) => name);
if (undefinedSymbols.length > 0) {
  fail(`${target} leaves ${undefinedSymbols.slice(0, 5).join(', ')} undefined (link the library that defines them)`);
}

for (const [name, file] of Object.entries(notices)) {
  if (!existsSync(file)) fail(`the license notice of ${name} (${file}) is missing; the prebuilt must ship it`);
  copyFileSync(file, join(dirname(target), `LICENSE.${name}.txt`));
}

const info = require(target).backendInfo();
if (!info.hasBlas) fail(`${target} has no OpenBLAS kernels (${info.cpu}): is libopenblas-dev installed?`);
console.log(`pack-prebuilt: ${target} (${info.cpu}; needs ${needed.join(' ')})`);

#!/usr/bin/env node
// The package's `install` script. In a git checkout it builds from source (scripts/build.js: the addon with
// cmake-js, then the TypeScript), as a developer expects. Installed from the registry or a tarball, the package
// ships compiled JS and a prebuilt addon for linux-x64 (prebuilds/, made by scripts/pack-prebuilt.js): when that
// addon loads here, nothing is built; otherwise the addon is built from source, and when that is impossible
// (no cmake or no compiler) one line says what to install. docs/install.md describes each path.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUILD_NEEDS, missingBuildTools } from './build.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const platform = `${process.platform}-${process.arch}`;
const prebuilt = join(root, 'prebuilds', platform, 'time_edit.node');

/** The prebuilt's CPU backend name when it loads in this Node on this machine, else the reason it does not. */
function tryPrebuilt() {
  if (!existsSync(prebuilt)) return { ok: false, why: `no prebuilt addon for ${platform}` };
  try {
    const addon = createRequire(import.meta.url)(prebuilt);
    return { ok: true, backend: addon.backendInfo().cpu };
  } catch (err) {
    return { ok: false, why: `the prebuilt addon for ${platform} does not load here (${String(err).split('\n')[0]})` };
  }
}

function buildFromSource() {
  const result = spawnSync(process.execPath, [join(root, 'scripts', 'build.js')], { cwd: root, stdio: 'inherit' });
  process.exit(result.status ?? 1);
}

if (existsSync(join(root, '.git'))) buildFromSource();

const found = tryPrebuilt();
if (found.ok) {
  console.log(`time-edit: using the prebuilt addon ${relative(root, prebuilt)} (${found.backend})`);
  process.exit(0);
}
const missing = missingBuildTools();
if (missing.length > 0) {
  console.error(
    `time-edit: ${found.why}, and building it from source needs ${BUILD_NEEDS}; ` +
      `${missing.join(' and ')} not found: install them, then \`npm rebuild time-edit\``,
  );
  process.exit(1);
}
console.log(`time-edit: ${found.why}: building the addon from source`);
buildFromSource();

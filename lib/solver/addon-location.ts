// Where the native addon (time_edit.node) is loaded from. One rule for every way the package is used: a path
// given in $TIME_EDIT_ADDON (another build, e.g. node-gyp's), the source build of a git checkout or of a
// `npm install` that compiled it, and last the prebuilt addon that the published package ships for its
// platform (docs/install.md says how each one comes to be).
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: this file is lib/solver/addon-location.(ts|js). */
const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The source build's output: what `npm run build` (cmake-js) writes. */
export const sourceBuildPath = join(packageRoot, 'build', 'Release', 'time_edit.node');

/**
 * The prebuilt addon shipped in the package for a platform and architecture (`npm pack` builds the linux-x64 one).
 *
 * @example
 * prebuiltAddonPath('linux', 'x64');  // '<package>/prebuilds/linux-x64/time_edit.node'
 */
export function prebuiltAddonPath(platform: string = process.platform, arch: string = process.arch): string {
  return join(packageRoot, 'prebuilds', `${platform}-${arch}`, 'time_edit.node');
}

/**
 * The path of the addon to load: $TIME_EDIT_ADDON when set (it must exist), else the source build
 * build/Release/time_edit.node, else the prebuilt for `${process.platform}-${process.arch}`.
 * Throws an Error with a one-line message that lists the paths tried and how to build the addon.
 *
 * @example
 * const addon = createRequire(import.meta.url)(locateAddon());
 */
export function locateAddon(): string {
  const fromEnv = process.env.TIME_EDIT_ADDON;
  const tried: string[] = [];
  if (fromEnv !== undefined && fromEnv !== '') {
    const path = resolve(fromEnv);
    if (existsSync(path)) return path;
    tried.push(`${path} ($TIME_EDIT_ADDON)`);
  } else {
    for (const path of [sourceBuildPath, prebuiltAddonPath()]) {
      if (existsSync(path)) return path;
      tried.push(path);
    }
  }
  throw new Error(
    `time-edit: native addon not found (tried ${tried.join(', ')}); build it with \`npm run build\` in ${packageRoot}, ` +
      'which needs cmake, a C++17 compiler and, for the fast kernels, libopenblas-dev liblapacke-dev',
  );
}

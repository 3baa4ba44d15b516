// Creates a folder and its missing parents. Node's mkdir({ recursive: true }) loops forever when the parent exists
// but creating the child fails with ENOENT (checked with Node 20 on /proc/x: mkdirSync and fs.promises.mkdir both
// hang), so the missing folders are found first and created one by one, and any failure names the folder.
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { errorCode, FileError } from './file-error.js';

function code(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** mkdir -p, without Node's infinite loop: `makeDirectory('out/images/a')`. */
export function makeDirectory(path: string): void {
  const target = resolve(path);
  const missing: string[] = [];
  try {
    for (let p = target; ; p = dirname(p)) {
      let isDirectory: boolean;
      try {
        isDirectory = statSync(p).isDirectory();
      } catch (err) {
        // ENOTDIR: a file stands somewhere above; walking up finds it and names it
        if ((code(err) !== 'ENOENT' && code(err) !== 'ENOTDIR') || dirname(p) === p) throw err;
        missing.push(p);
        continue;
      }
      if (!isDirectory) throw new Error(`${p} exists and is not a folder`);
      break;
    }
    for (const dir of missing.reverse()) {
      try {
        mkdirSync(dir);
      } catch (err) {
        if (code(err) !== 'EEXIST' || !statSync(dir).isDirectory()) throw err; // made meanwhile by someone else
      }
    }
  } catch (err) {
    throw new FileError(`cannot create the folder ${target}: ${err instanceof Error ? err.message : String(err)}`, target, {
      code: errorCode(err),
      cause: err,
    });
  }
}

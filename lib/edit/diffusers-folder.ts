// `--save-model DIR`: the edited diffusers folder. Only the UNet's weights file changes (its K/V tensors replaced by
// W·M, as lib/edit/merged-checkpoint.ts rewrites a single file, the edit recorded in its metadata); every other file
// of the folder is hard-linked, or copied where links are not possible. The folder is built next to DIR under a
// temporary name and renamed into place, so a failure leaves no half-written folder.
import { copyFileSync, existsSync, linkSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { Checkpoint } from '../checkpoint/open-checkpoint.js';
import { makeDirectory } from '../fs/make-directory.js';
import type { Edit } from './edit.js';
import { EditError } from './edit.js';
import { editedKvTensors, editMetadata, rewriteSafetensors } from './merged-checkpoint.js';

function linkOrCopy(src: string, dst: string): void {
  try {
    linkSync(src, dst);
  } catch {
    copyFileSync(src, dst);
  }
}

/** Links every regular file of `src` into `dst` (folders recreated), except the relative paths in `skip`. */
function linkTree(src: string, dst: string, skip: ReadonlySet<string>, root = src): void {
  makeDirectory(dst);
  for (const name of readdirSync(src)) {
    const s = join(src, name);
    if (skip.has(relative(root, s))) continue;
    const st = statSync(s);
    if (st.isDirectory()) linkTree(s, join(dst, name), skip, root);
    else if (st.isFile()) linkOrCopy(s, join(dst, name));
  }
}

/**
 * Writes the edited copy of a diffusers folder checkpoint to `outDir`, which must not exist.
 *
 * @example
 *   await writeEditedDiffusersFolder(openCheckpoint('sd15-diffusers'), edit, 'sd15-purple', { fingerprint });
 */
export async function writeEditedDiffusersFolder(
  checkpoint: Checkpoint,
  edit: Edit,
  outDir: string,
  options: { fingerprint: string },
): Promise<void> {
  if (checkpoint.kind !== 'diffusers') throw new EditError(`${checkpoint.path} is a single file: write it with writeMergedCheckpoint`);
  const out = resolve(outDir);
  const root = resolve(checkpoint.path);
  if (existsSync(out)) throw new EditError(`${out} already exists: choose a new folder for the edited model`);
  if (out === root || out.startsWith(`${root}/`))
    throw new EditError(`${out} is inside the model folder ${root}: choose a folder outside it`);
  const unet = checkpoint.kv[0]!.file;
  const unetRel = relative(root, resolve(unet.path));
  const replacements = editedKvTensors(checkpoint, edit, unet);
  replacements.catch(() => undefined); // awaited by rewriteSafetensors; a failure before it is called is thrown there too
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    linkTree(root, tmp, new Set([unetRel]));
    await rewriteSafetensors(unet, replacements, editMetadata(edit, options.fingerprint), join(tmp, unetRel));
    renameSync(tmp, out);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

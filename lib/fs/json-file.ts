// Reading the JSON files of a model folder (model_index.json, the configs, tokenizer files) and asking what a
// path is. Every failure is a FileError that names the file and says why, so the caller only decides what it means
// (a missing optional config is no error; a corrupt one is a broken model).
import { readFile, stat } from 'node:fs/promises';
import { errorCode, FileError } from './file-error.js';

/** True when `path` is a folder; false when it is anything else or does not exist. Example: `await isDirectory('models/x')`. */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** True when `path` is a regular file (after links); false otherwise. Example: `await isFile('unet/model.onnx')`. */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * The parsed contents of a JSON file, of any JSON type; a FileError "cannot read <path>: …" or
 * "<path> is not valid JSON: …" otherwise. Example: `const merges = await readJsonFile('tokenizer/merges.json')`.
 */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new FileError(`cannot read ${path}: ${(err as Error).message}`, path, { code: errorCode(err), cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new FileError(`${path} is not valid JSON: ${(err as Error).message}`, path, { cause: err });
  }
}

/**
 * A JSON file that must hold an object (a config); a FileError naming the file otherwise.
 * Example: `const config = await readJsonObject('unet/config.json'); config['sample_size']`.
 */
export async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const v = await readJsonFile(path);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FileError(`${path} must hold a JSON object`, path);
  return v as Record<string, unknown>;
}

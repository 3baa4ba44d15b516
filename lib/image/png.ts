// PNG output with pngjs. Files are written to a temporary name in the same folder and renamed into place, so a
// crash or an error never leaves a half-written PNG under the final name.
import { randomBytes } from 'node:crypto';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PNG } from 'pngjs';

/** An RGB image: height × width × 3 bytes, row-major. */
export interface RgbImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

function checkImage(img: RgbImage): void {
  if (!Number.isInteger(img.width) || !Number.isInteger(img.height) || img.width <= 0 || img.height <= 0) throw new RangeError(`bad image size ${img.width}×${img.height}`);
  if (img.rgb.length !== img.width * img.height * 3) throw new RangeError(`image data has ${img.rgb.length} bytes, expected ${img.width}×${img.height}×3`);
}

/** PNG bytes (8-bit RGB, no alpha) of an image. Example: `encodePng({ width: 2, height: 1, rgb: new Uint8Array(6) })`. */
export function encodePng(img: RgbImage): Buffer {
  checkImage(img);
  const png = new PNG({ width: img.width, height: img.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  png.data = Buffer.from(img.rgb.buffer, img.rgb.byteOffset, img.rgb.byteLength);
  return PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
}

/** Decodes a PNG to RGB (alpha dropped): for tests and tools. */
export function decodePng(bytes: Uint8Array): RgbImage {
  const png = PNG.sync.read(Buffer.from(bytes));
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let i = 0, j = 0; i < png.data.length; i += 4, j += 3) {
    rgb[j] = png.data[i]!;
    rgb[j + 1] = png.data[i + 1]!;
    rgb[j + 2] = png.data[i + 2]!;
  }
  return { width: png.width, height: png.height, rgb };
}

/** Writes bytes to `path` atomically: a temporary sibling file, then rename. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Encodes and writes a PNG atomically. Example: `await writePng('out/a.png', image)`. */
export async function writePng(path: string, img: RgbImage): Promise<void> {
  await writeFileAtomic(path, encodePng(img));
}

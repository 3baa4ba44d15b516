// PNG output with pngjs. Files are written atomically (lib/fs/durable-file.ts), so a crash or an error never
// leaves a half-written PNG under the final name. A missing parent folder is created.
import { crc32 } from 'node:zlib';
import { PNG } from 'pngjs';
import { writeFileAtomic } from '../fs/durable-file.js';

/** An RGB image: height × width × 3 bytes, row-major. */
export interface RgbImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

function checkImage(img: RgbImage): void {
  if (!Number.isInteger(img.width) || !Number.isInteger(img.height) || img.width <= 0 || img.height <= 0)
    throw new RangeError(`bad image size ${img.width}×${img.height}`);
  if (img.rgb.length !== img.width * img.height * 3)
    throw new RangeError(`image data has ${img.rgb.length} bytes, expected ${img.width}×${img.height}×3`);
}

/** An uncompressed iTXt chunk (UTF-8 text under a Latin-1 keyword), PNG spec section 11.3.4.5. */
function itxtChunk(keyword: string, text: string): Buffer {
  if (!/^[\x20-\x7e]{1,79}$/.test(keyword)) throw new RangeError(`PNG text keyword '${keyword}' must be 1-79 printable ASCII characters`);
  const body = Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]);
  const typeAndBody = Buffer.concat([Buffer.from('iTXt', 'latin1'), body]);
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  typeAndBody.copy(out, 4);
  out.writeUInt32BE(crc32(typeAndBody) >>> 0, 8 + body.length);
  return out;
}

/**
 * PNG bytes (8-bit RGB, no alpha) of an image, with optional text metadata as iTXt chunks after the header
 * (`generate` stores prompt, seed, model, steps, guidance, scheduler). Example:
 * `encodePng({ width: 2, height: 1, rgb: new Uint8Array(6) }, { prompt: 'a circle' })`.
 */
export function encodePng(img: RgbImage, text: Record<string, string> = {}): Buffer {
  checkImage(img);
  const png = new PNG({ width: img.width, height: img.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  png.data = Buffer.from(img.rgb.buffer, img.rgb.byteOffset, img.rgb.byteLength);
  const bytes = PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
  const entries = Object.entries(text);
  if (entries.length === 0) return bytes;
  const afterHeader = 8 + 12 + 13; // signature, IHDR chunk (13-byte body)
  return Buffer.concat([bytes.subarray(0, afterHeader), ...entries.map(([k, v]) => itxtChunk(k, v)), bytes.subarray(afterHeader)]);
}

/** The iTXt text chunks of a PNG (uncompressed ones, as encodePng writes them). */
export function readPngText(bytes: Uint8Array): Record<string, string> {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Record<string, string> = {};
  for (let pos = 8; pos + 12 <= b.length; ) {
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    if (type === 'iTXt') {
      const body = b.subarray(pos + 8, pos + 8 + len);
      const k = body.indexOf(0);
      const langEnd = body.indexOf(0, k + 3);
      const transEnd = body.indexOf(0, langEnd + 1);
      if (k > 0 && body[k + 1] === 0 && langEnd > 0 && transEnd > 0)
        out[body.toString('latin1', 0, k)] = body.toString('utf8', transEnd + 1);
    }
    if (type === 'IEND') break;
    pos += 12 + len;
  }
  return out;
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

/**
 * Encodes and writes a PNG atomically, creating the parent folder if missing.
 * Example: `await writePng('out/a.png', image, { prompt: 'a circle' })`.
 */
export async function writePng(path: string, img: RgbImage, text: Record<string, string> = {}): Promise<void> {
  await writeFileAtomic(path, encodePng(img, text));
}

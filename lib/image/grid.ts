// Grids of equally sized images: row r, column c holds images[r * columns + c] (row-major, the order given).
// `generate --grid` passes its images prompt-major, so each row is one prompt and each column one seed.
import type { RgbImage } from './png.js';

/**
 * Tiles images into `columns` columns with `gap` pixels of `background` between them (default 2, white).
 * Example: `makeGrid(images, seeds.length)`.
 */
export function makeGrid(images: RgbImage[], columns: number, gap = 2, background: [number, number, number] = [255, 255, 255]): RgbImage {
  if (images.length === 0) throw new RangeError('makeGrid: no images');
  if (!Number.isInteger(columns) || columns < 1) throw new RangeError(`makeGrid: columns must be a positive integer, got ${columns}`);
  const { width: w, height: h } = images[0]!;
  for (const im of images) if (im.width !== w || im.height !== h) throw new RangeError(`makeGrid: images differ in size (${im.width}×${im.height} vs ${w}×${h})`);
  const cols = Math.min(columns, images.length);
  const rows = Math.ceil(images.length / cols);
  const W = cols * w + (cols - 1) * gap;
  const H = rows * h + (rows - 1) * gap;
  const rgb = new Uint8Array(W * H * 3);
  for (let i = 0; i < W * H; i++) rgb.set(background, i * 3);
  images.forEach((im, k) => {
    const x0 = (k % cols) * (w + gap);
    const y0 = Math.floor(k / cols) * (h + gap);
    for (let y = 0; y < h; y++) rgb.set(im.rgb.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * W + x0) * 3);
  });
  return { width: W, height: H, rgb };
}

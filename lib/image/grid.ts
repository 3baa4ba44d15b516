// Grids of equally sized images: row r, column c holds images[r * columns + c] (row-major, the order given).
// `generate --grid` passes its images prompt-major, so each row is one prompt and each column one seed.
// A grid can be enlarged by a whole factor with nearest-neighbour sampling, so that the 32×32 images of a small
// model are big enough to look at while every colour stays exactly what the model drew (no interpolation).
import type { RgbImage } from './png.js';

/** How a grid is laid out and drawn. */
export interface GridOptions {
  /** Pixels between cells, before scaling (default 2). */
  gap?: number;
  /** Colour of the gaps (default white). */
  background?: [number, number, number];
  /**
   * Whole-number enlargement of the finished grid, nearest neighbour (default 1: the images' own size).
   * Cells, gaps and all become `scale` times larger; sampling every `scale`-th pixel gives the 1× grid back.
   */
  scale?: number;
}

/**
 * Tiles images into `columns` columns with `gap` pixels of `background` between them (default 2, white), then
 * enlarges the result by `scale` (default 1). The older positional form `makeGrid(images, columns, gap, background)`
 * is still accepted.
 * Example: `makeGrid(images, seeds.length)`, or `makeGrid(images, 8, { scale: 4 })` for 32×32 images shown as 128×128.
 */
export function makeGrid(images: RgbImage[], columns: number, options?: GridOptions): RgbImage;
export function makeGrid(images: RgbImage[], columns: number, gap?: number, background?: [number, number, number]): RgbImage;
export function makeGrid(
  images: RgbImage[],
  columns: number,
  gapOrOptions?: number | GridOptions,
  background?: [number, number, number],
): RgbImage {
  const options: GridOptions = typeof gapOrOptions === 'object' ? gapOrOptions : { gap: gapOrOptions, background };
  const gap = options.gap ?? 2;
  const fill = options.background ?? [255, 255, 255];
  const scale = options.scale ?? 1;
  if (images.length === 0) throw new RangeError('makeGrid: no images');
  if (!Number.isInteger(columns) || columns < 1) throw new RangeError(`makeGrid: columns must be a positive integer, got ${columns}`);
  if (!Number.isInteger(gap) || gap < 0) throw new RangeError(`makeGrid: gap must be a non-negative integer, got ${gap}`);
  if (!Number.isInteger(scale) || scale < 1) throw new RangeError(`makeGrid: scale must be a positive integer, got ${scale}`);
  const { width: w, height: h } = images[0]!;
  for (const im of images)
    if (im.width !== w || im.height !== h) throw new RangeError(`makeGrid: images differ in size (${im.width}×${im.height} vs ${w}×${h})`);
  const cols = Math.min(columns, images.length);
  const rows = Math.ceil(images.length / cols);
  const W = cols * w + (cols - 1) * gap;
  const H = rows * h + (rows - 1) * gap;
  const rgb = new Uint8Array(W * H * 3);
  for (let i = 0; i < W * H; i++) rgb.set(fill, i * 3);
  images.forEach((im, k) => {
    const x0 = (k % cols) * (w + gap);
    const y0 = Math.floor(k / cols) * (h + gap);
    for (let y = 0; y < h; y++) rgb.set(im.rgb.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * W + x0) * 3);
  });
  const grid = { width: W, height: H, rgb };
  return scale === 1 ? grid : enlargeNearest(grid, scale);
}

/**
 * The smallest whole factor that makes a side of `size` pixels at least `minimum` pixels (1 when it already is).
 * Example: `scaleToAtLeast(32, 128)` → 4; `scaleToAtLeast(512, 128)` → 1.
 */
export function scaleToAtLeast(size: number, minimum: number): number {
  if (!(size > 0) || !(minimum > 0)) throw new RangeError(`scaleToAtLeast: size and minimum must be > 0, got ${size} and ${minimum}`);
  return Math.max(1, Math.ceil(minimum / size));
}

/** Each pixel becomes a `factor` × `factor` block of the same colour. */
function enlargeNearest(img: RgbImage, factor: number): RgbImage {
  const width = img.width * factor;
  const height = img.height * factor;
  const rgb = new Uint8Array(width * height * 3);
  const row = new Uint8Array(width * 3);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const src = (y * img.width + x) * 3;
      for (let i = 0; i < factor; i++) row.set(img.rgb.subarray(src, src + 3), (x * factor + i) * 3);
    }
    for (let i = 0; i < factor; i++) rgb.set(row, (y * factor + i) * width * 3);
  }
  return { width, height, rgb };
}

// Deterministic colour classifier for the toy-shapes world: the foreground (saturated pixels; the background is
// grey) votes by nearest hue, and the most voted colour wins. It is the same algorithm, thresholds and tie-breaks
// as classify_colour in models/toy-shapes-train/world.py, so the TypeScript evaluation and the training script's
// measurements agree.

/** A named colour and the RGB it is drawn with; its hue is the class centre. */
export interface ColourSpec {
  name: string;
  rgb: readonly [number, number, number];
}

/** The toy world's colours, in tie-break order (models/toy-shapes/toy_world.json holds the same list). */
export const TOY_COLOURS: readonly ColourSpec[] = [
  { name: 'red', rgb: [220, 38, 38] },
  { name: 'orange', rgb: [245, 125, 20] },
  { name: 'yellow', rgb: [240, 210, 25] },
  { name: 'green', rgb: [34, 160, 60] },
  { name: 'blue', rgb: [35, 85, 225] },
  { name: 'purple', rgb: [140, 55, 200] },
];

/** Each shape's implicit default colour in the toy world (what an unnamed-colour prompt should give). */
export const TOY_DEFAULT_COLOUR: Readonly<Record<string, string>> = {
  circle: 'red',
  square: 'blue',
  triangle: 'green',
  star: 'yellow',
};

export interface ClassifierOptions {
  /** Minimum HSV saturation of a foreground pixel (default 0.3; the grey background has 0). */
  saturationMin?: number;
  /** Minimum HSV value (max channel / 255) of a foreground pixel (default 0.2). */
  valueMin?: number;
  /** Fewer foreground pixels than this gives 'none' (default 4). */
  minPixels?: number;
  /** Colour classes in tie-break order (default TOY_COLOURS). */
  colours?: readonly ColourSpec[];
}

export interface HSV {
  /** degrees in [0, 360) */
  hue: number;
  saturation: number;
  value: number;
}

/**
 * HSV of one RGB pixel (channels 0..255), computed in float64 exactly as the Python classifier does.
 * @example hsv(255, 255, 0) // { hue: 60, saturation: 1, value: 1 }
 */
export function hsv(r8: number, g8: number, b8: number): HSV {
  const r = r8 / 255;
  const g = g8 / 255;
  const b = b8 / 255;
  const mx = Math.max(r, g, b);
  const mn = Math.min(r, g, b);
  const c = mx - mn;
  let h = 0;
  if (c > 0) {
    if (mx === r)
      h = ((((g - b) / c) % 6) + 6) % 6; // floored modulo, like numpy's %
    else if (mx === g) h = (b - r) / c + 2;
    else h = (r - g) / c + 4;
    h *= 60;
  }
  return { hue: ((h % 360) + 360) % 360, saturation: mx > 0 ? c / mx : 0, value: mx };
}

function circularDistance(a: number, b: number): number {
  const d = Math.abs(a - b);
  return Math.min(d, 360 - d);
}

export interface Classification {
  /** the winning colour name, or 'none' when fewer than minPixels pixels are foreground */
  colour: string;
  /** votes per colour, in the order of options.colours */
  votes: number[];
  foregroundPixels: number;
}

/**
 * Classify the dominant colour of an interleaved 8-bit image (RGB or RGBA, row-major; alpha is ignored).
 * @example
 *   const { colour } = classifyColourDetailed(pngData, 32, 32, 4); // pngjs gives RGBA
 */
export function classifyColourDetailed(
  pixels: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
  channels: 3 | 4 = 3,
  options: ClassifierOptions = {},
): Classification {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`image size must be positive integers, got ${width}x${height}`);
  }
  if (channels !== 3 && channels !== 4) throw new RangeError(`channels must be 3 or 4, got ${String(channels)}`);
  if (pixels.length !== width * height * channels) {
    throw new RangeError(`expected ${width * height * channels} bytes for ${width}x${height}x${channels}, got ${pixels.length}`);
  }
  const colours = options.colours ?? TOY_COLOURS;
  if (colours.length === 0) throw new RangeError('at least one colour class is needed');
  const satMin = options.saturationMin ?? 0.3;
  const valMin = options.valueMin ?? 0.2;
  const minPixels = options.minPixels ?? 4;
  const centres = colours.map((c) => hsv(c.rgb[0], c.rgb[1], c.rgb[2]).hue);
  const votes = new Array<number>(colours.length).fill(0);
  let fg = 0;
  for (let p = 0; p < width * height; p++) {
    const o = p * channels;
    const { hue, saturation, value } = hsv(pixels[o]!, pixels[o + 1]!, pixels[o + 2]!);
    if (saturation < satMin || value < valMin) continue;
    fg++;
    let best = 0;
    let bestD = circularDistance(hue, centres[0]!);
    for (let k = 1; k < centres.length; k++) {
      const d = circularDistance(hue, centres[k]!);
      if (d < bestD) {
        best = k;
        bestD = d;
      }
    }
    votes[best] = votes[best]! + 1;
  }
  if (fg < minPixels) return { colour: 'none', votes, foregroundPixels: fg };
  let win = 0;
  for (let k = 1; k < votes.length; k++) if (votes[k]! > votes[win]!) win = k;
  return { colour: colours[win]!.name, votes, foregroundPixels: fg };
}

/**
 * The dominant colour name of an 8-bit RGB/RGBA image, or 'none'.
 * @example classifyColour(rgb, 32, 32) // 'red'
 */
export function classifyColour(
  pixels: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
  channels: 3 | 4 = 3,
  options: ClassifierOptions = {},
): string {
  return classifyColourDetailed(pixels, width, height, channels, options).colour;
}

/**
 * The colour a prompt names (first colour word), or undefined; used to read TIMED gt/gn columns.
 * @example colourNamedIn('a drawing of a purple circle') // 'purple'
 */
export function colourNamedIn(prompt: string, colours: readonly ColourSpec[] = TOY_COLOURS): string | undefined {
  const names = new Set(colours.map((c) => c.name));
  return prompt
    .toLowerCase()
    .split(/[^a-z]+/)
    .find((w) => names.has(w));
}

// The progress bar of the commands (`generate`, `edit`'s before/after grid, `edit --batch`): a 30-column bar
// redrawn in place on stderr, only when stderr is a terminal, so logs and pipes get no carriage-return noise.
// The library reports progress through callbacks; only the CLI draws.

/** Told how many of `total` steps are done. */
export type ProgressCallback = (done: number, total: number) => void;

export interface ProgressBarOptions {
  /** text before the bar, e.g. 'before' */
  label?: string;
  /**
   * Show the rate since the bar was made (or since the last call with 0 done): `', 2.5/s'`; with a string, that
   * unit is named too: `', 2.5 lines/s'`.
   */
  rate?: boolean | string;
  /** where to draw (default: process.stderr) */
  stream?: NodeJS.WriteStream;
}

const WIDTH = 30;

/**
 * A bar for steps counted in `unit` ("UNet calls", "lines"), or undefined when the stream is not a terminal (so a
 * caller can leave its progress option unset). It ends its line when done reaches total.
 * Example: `generate(pipeline, { ...options, onProgress: progressBar('UNet calls', { rate: true }) })` draws
 * `[###############...............] 26/51 UNet calls, 3.1/s`.
 */
export function progressBar(unit: string, options: ProgressBarOptions = {}): ProgressCallback | undefined {
  const stream = options.stream ?? process.stderr;
  if (stream.isTTY !== true) return undefined;
  const prefix = options.label === undefined ? '' : `${options.label} `;
  const rateUnit = typeof options.rate === 'string' ? ` ${options.rate}` : '';
  let t0 = performance.now();
  return (done, total) => {
    if (done === 0) t0 = performance.now();
    const fill = total === 0 ? WIDTH : Math.round((done / total) * WIDTH);
    let rate = '';
    if (options.rate !== undefined && options.rate !== false) {
      const perSecond = done / Math.max(1e-9, (performance.now() - t0) / 1000);
      rate = `, ${perSecond.toFixed(1)}${rateUnit}/s`;
    }
    stream.write(`\r${prefix}[${'#'.repeat(fill)}${'.'.repeat(WIDTH - fill)}] ${done}/${total} ${unit}${rate} `);
    if (done === total) stream.write('\n');
  };
}

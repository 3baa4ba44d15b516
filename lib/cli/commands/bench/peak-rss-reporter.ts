// Preloaded (`node --import`) into the child processes of `bench generate --memory`: when the child exits, its
// peak resident set size (getrusage's ru_maxrss, the whole process: main thread and onnxruntime's worker thread)
// is written as JSON to the file named by TIME_EDIT_PEAK_RSS_FILE, so each setting's peak is its own process's.
import { writeFileSync } from 'node:fs';

const file = process.env.TIME_EDIT_PEAK_RSS_FILE;
if (file !== undefined && file !== '') {
  process.on('exit', () => {
    // Node reports ru_maxrss in kilobytes on every platform.
    writeFileSync(file, JSON.stringify({ peakRssBytes: process.resourceUsage().maxRSS * 1024 }));
  });
}

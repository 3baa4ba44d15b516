// The `time-edit/eval` entry point: what scoring an edit needs outside `time-edit eval timed` — the toy world's
// deterministic colour classifier, the TIMED dataset reader (the CSV of the TIME paper's benchmark), and the CLIP
// zero-shot judge for real Stable Diffusion models. The run itself (runTimed, its log and reports) stays internal.
export {
  classifyColour,
  classifyColourDetailed,
  colourNamedIn,
  hsv,
  TOY_COLOURS,
  TOY_DEFAULT_COLOUR,
} from './colour-classifier.js';
export type { ColourSpec, ClassifierOptions, Classification, HSV } from './colour-classifier.js';
export { parseCsv, parseTimed, readTimed, readTimedDataset, TIMED_COLUMNS, DatasetError } from './timed-csv.js';
export type { TimedEntry, TimedDataset } from './timed-csv.js';
export { ClipJudge, preprocessClip, CLIP_PREPROCESS } from './clip-judge.js';
export type { ClipPreprocess } from './clip-judge.js';
export { colourJudge } from './timed.js';
export type { Judge, Category } from './timed.js';

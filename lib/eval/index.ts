// The `time-edit/eval` entry point: what scoring an edit needs outside `time-edit eval timed` — the toy world's
// deterministic colour classifier, the TIMED dataset reader (the CSV of the TIME paper's benchmark), and the CLIP
// zero-shot judge for real Stable Diffusion models; for the debiasing protocol (`eval debias`), its dataset reader,
// Δ and the λ search, and its judges. The runs themselves (runTimed, runDebias, their logs and reports) stay internal.
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
export { parseDebias, readDebiasDataset, DEBIAS_COLUMNS } from './debias-csv.js';
export type { DebiasEntry, DebiasDataset } from './debias-csv.js';
export { attributeShare, balanceDistance, searchLambda } from './debias-search.js';
export type { AttributeCounts, LambdaSearchOptions, LambdaSearchResult, SearchRound } from './debias-search.js';
export {
  clipAttributeJudge,
  toyColourAttributeJudge,
  fillTemplate,
  DEFAULT_ATTRIBUTE_TEMPLATE,
  DEFAULT_ATTRIBUTE_PAIR,
} from './debias-judges.js';
export type { AttributeJudge, AttributeClass } from './debias-judges.js';

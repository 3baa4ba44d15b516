import { appendToLog, settingDifferences, writeLog } from '../fs/run-log.js';
import type { DebiasEntry } from './debias-csv.js';
import { DEBIAS_MODELS, type DebiasResult } from './debias.js';
import type { AttributeCounts } from './debias-search.js';
import { readEntryLog, showSetting } from './timed-log.js';

export const DEBIAS_LOG_NAME = 'results.jsonl';
const LOG_KIND = 'time-edit eval debias';
const LOG_FORMAT = 1;

/** Everything that changes the numbers of `eval debias`; a resumed run must match it exactly. */
export interface DebiasRunSettings {
  model: string;
  modelFingerprint: string;
  datasetSha256: string;
  seeds: number[];
  searchSeeds: number[];
  steps: number;
  guidance: number;
  fixedLambda: number;
  lambdaMin: number;
  lambdaMax: number;
  rounds: number;
  augmentations: string[];
  mode: string;
  judge: string;
  device: string;
  batchSize: number;
}

const SETTING_NAMES: Record<keyof DebiasRunSettings, string> = {
  model: '--model',
  modelFingerprint: '--model (the model files changed: text encoder or UNet)',
  datasetSha256: "the dataset file's contents (sha256)",
  seeds: '--seeds',
  searchSeeds: '--search-seeds',
  steps: '--steps',
  guidance: '--guidance',
  fixedLambda: '--lambda',
  lambdaMin: '--lambda-range (low end)',
  lambdaMax: '--lambda-range (high end)',
  rounds: '--rounds',
  augmentations: '--no-augment',
  mode: '--mode',
  judge: '--clip, --judge-template or --attributes',
  device: '--device',
  batchSize: 'images per UNet call (set by time-edit itself)',
};

export interface DebiasLogContents {
  settings: Record<string, unknown>;
  results: Map<number, DebiasResult>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isCount = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;

function checkCounts(v: unknown): AttributeCounts[] {
  if (
    !(Array.isArray(v) && v.length === 6 && v.every((c) => isObject(c) && isCount(c.attribute) && isCount(c.other) && isCount(c.inBetween)))
  )
    throw new Error('counts must give attribute, other and inBetween for 6 prompts');
  return v as AttributeCounts[];
}

function checkEntry(v: unknown): DebiasEntry {
  const s = (x: unknown) => typeof x === 'string' && x !== '';
  if (
    !isObject(v) ||
    !Number.isSafeInteger(v.index) ||
    !['old', 'new', 'attribute', 'profession', 'validation'].every((k) => s(v[k])) ||
    !(Array.isArray(v.examples) && v.examples.length === 5 && v.examples.every(s))
  )
    throw new Error('"entry" is not a debiasing entry');
  return v as unknown as DebiasEntry;
}

function parseEntryLine(v: unknown): DebiasResult {
  if (!isObject(v)) throw new Error('not a JSON object');
  const r: DebiasResult = { entry: checkEntry(v.entry) };
  if (v.error !== undefined) {
    if (typeof v.error !== 'string') throw new Error('"error" must be a string');
    r.error = v.error;
  } else {
    if (!isObject(v.counts)) throw new Error('"counts" missing');
    const counts = v.counts;
    r.counts = Object.fromEntries(DEBIAS_MODELS.map((m) => [m, checkCounts(counts[m])])) as DebiasResult['counts'];
    const search = v.search;
    if (!isObject(search) || typeof search.lambda !== 'number' || !(search.lambda > 0) || !Array.isArray(search.rounds))
      throw new Error('"search" must give the chosen λ and the rounds');
    r.search = search as unknown as DebiasResult['search'];
  }
  if (v.seconds !== undefined) {
    if (typeof v.seconds !== 'number' || !Number.isFinite(v.seconds)) throw new Error('"seconds" must be a number');
    r.seconds = v.seconds;
  }
  return r;
}

/**
 * Reads OUT/results.jsonl of an `eval debias` run; no file is no log. Throws RunLogError ('foreign' when the file is
 * another command's). Example: `readDebiasLog('out/debias/results.jsonl').log?.results.size`.
 */
export function readDebiasLog(path: string): { log?: DebiasLogContents; tornLine?: number } {
  return readEntryLog(path, LOG_KIND, LOG_FORMAT, parseEntryLine);
}

/** The settings that differ, as "--seeds was 0,1 there and is 0,1,2 now" (only the keys of `current`). */
export function debiasSettingsDifferences(recorded: Record<string, unknown>, current: Partial<DebiasRunSettings>): string[] {
  return settingDifferences(recorded, current).map(
    (d) => `${SETTING_NAMES[d.key as keyof DebiasRunSettings]} was ${showSetting(d.recorded)} there and is ${showSetting(d.current)} now`,
  );
}

function entryRecord(r: DebiasResult): object {
  const { entry, counts, search, error, seconds } = r;
  return { entry, ...(error !== undefined ? { error } : { counts, search }), seconds };
}

/** Starts the log: the header and the results kept from an earlier run, in one atomic write. */
export function startDebiasLog(path: string, settings: DebiasRunSettings, kept: DebiasResult[]): void {
  writeLog(path, [...kept].sort((a, b) => a.entry.index - b.entry.index).map(entryRecord), { log: LOG_KIND, format: LOG_FORMAT, settings });
}

/** Appends one finished entry durably (one write, then fsync). */
export function appendToDebiasLog(path: string, result: DebiasResult): void {
  appendToLog(path, entryRecord(result));
}

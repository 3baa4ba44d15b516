// The JSON configs of a diffusers pipeline folder that this project reads, and their validation. They live with the
// model layer, which loads them; lib/sample interprets the scheduler's (so the model layer never imports lib/sample).
// Every value that is read is checked for its type and range here, before any work: a config value that is wrong
// (a string where a number belongs, a negative offset, a zero scaling factor) would otherwise give black or
// garbled images with no error. A bad value is a ModelError naming the file and the key. Keys this project does
// not read are not checked. The ranges are the ones the formulas need (diffusers' schedulers and configs, see
// https://huggingface.co/docs/diffusers/api/schedulers/overview), plus bounds that keep allocations sane.
import { describeValue, ModelError } from '../errors.js';

/** Where a pipeline folder keeps its scheduler config, relative to the folder (errors about it name this file). */
export const SCHEDULER_CONFIG_FILE = 'scheduler/scheduler_config.json';

/**
 * The largest num_train_timesteps accepted: SD 1.x has 1000, and every sampling run allocates arrays of this length,
 * so a corrupt value such as 1e9 must not allocate gigabytes.
 */
export const MAX_TRAIN_TIMESTEPS = 100_000;

/**
 * The fields of diffusers' scheduler_config.json that lib/sample/schedulers.ts reads (others are ignored).
 * Example: `{ _class_name: 'PNDMScheduler', num_train_timesteps: 1000, beta_schedule: 'scaled_linear' }`.
 */
export interface SchedulerConfig {
  _class_name?: string;
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  set_alpha_to_one?: boolean;
  steps_offset?: number;
  timestep_spacing?: string;
  clip_sample?: boolean;
  clip_sample_range?: number;
  prediction_type?: string;
}

/** A range a config number must lie in; `integer` also refuses fractions. */
interface NumberRule {
  integer?: boolean;
  /** inclusive lower bound */
  min?: number;
  /** exclusive lower bound */
  above?: number;
  /** inclusive upper bound */
  max?: number;
  /** exclusive upper bound */
  below?: number;
}

function ruleText(rule: NumberRule): string {
  const parts: string[] = [];
  if (rule.min !== undefined) parts.push(`≥ ${rule.min}`);
  if (rule.above !== undefined) parts.push(`> ${rule.above}`);
  if (rule.max !== undefined) parts.push(`≤ ${rule.max}`);
  if (rule.below !== undefined) parts.push(`< ${rule.below}`);
  return `${rule.integer === true ? 'an integer' : 'a number'}${parts.length > 0 ? ` ${parts.join(' and ')}` : ''}`;
}

function fitsRule(v: unknown, rule: NumberRule): v is number {
  if (typeof v !== 'number' || !Number.isFinite(v)) return false;
  if (rule.integer === true && !Number.isInteger(v)) return false;
  if (rule.min !== undefined && v < rule.min) return false;
  if (rule.above !== undefined && v <= rule.above) return false;
  if (rule.max !== undefined && v > rule.max) return false;
  if (rule.below !== undefined && v >= rule.below) return false;
  return true;
}

/**
 * Typed access to one config file's values: each getter returns the value of a key, or undefined when the key is
 * absent (or null), and throws a ModelError "<file>: <key> must be …, got …" for a value of the wrong type or range.
 * Example: `new ConfigValues('unet/config.json', json).integer('sample_size', { min: 1 })`.
 */
export class ConfigValues {
  constructor(
    /** the file the values come from, as messages name it (relative to the pipeline folder) */
    readonly file: string,
    private readonly values: Record<string, unknown>,
  ) {}

  /** A ModelError about `key` of this file. */
  error(key: string, expected: string, got: unknown): ModelError {
    return new ModelError(this.file, `${this.file}: ${key} must be ${expected}, got ${describeValue(got)}`);
  }

  private raw(key: string): unknown {
    const v = this.values[key];
    return v === null ? undefined : v;
  }

  number(key: string, rule: NumberRule = {}): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!fitsRule(v, rule)) throw this.error(key, ruleText(rule), v);
    return v;
  }

  integer(key: string, rule: NumberRule = {}): number | undefined {
    return this.number(key, { ...rule, integer: true });
  }

  string(key: string, choices?: readonly string[]): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw this.error(key, choices === undefined ? 'a string' : `one of ${choices.join(', ')}`, v);
    if (choices !== undefined && !choices.includes(v)) throw this.error(key, `one of ${choices.join(', ')}`, v);
    return v;
  }

  boolean(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw this.error(key, 'true or false', v);
    return v;
  }

  /** A non-empty array of numbers, each following `rule`, of at most `maxLength` entries. */
  numbers(key: string, rule: NumberRule, maxLength: number): number[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    const expected = `a list of 1 to ${maxLength} values, each ${ruleText(rule)}`;
    if (!Array.isArray(v) || v.length === 0 || v.length > maxLength) throw this.error(key, expected, v);
    v.forEach((x, i) => {
      if (!fitsRule(x, rule)) throw this.error(`${key}[${i}]`, ruleText(rule), x);
    });
    return v as number[];
  }
}

/**
 * scheduler_config.json's values, each checked (see the header): a ModelError naming the file and key otherwise.
 * The result holds only the keys SchedulerConfig lists. Example:
 * `validateSchedulerConfig({ num_train_timesteps: 1000, steps_offset: -1 })` throws
 * "scheduler/scheduler_config.json: steps_offset must be an integer ≥ 0 and ≤ 999, got -1".
 */
export function validateSchedulerConfig(raw: Readonly<Record<string, unknown>> | SchedulerConfig): SchedulerConfig {
  const c = new ConfigValues(SCHEDULER_CONFIG_FILE, raw as Record<string, unknown>);
  // T − 1 divides the beta schedule, so T ≥ 2.
  const T = c.integer('num_train_timesteps', { min: 2, max: MAX_TRAIN_TIMESTEPS });
  const last = (T ?? 1000) - 1;
  const out: SchedulerConfig = {};
  const put = <K extends keyof SchedulerConfig>(key: K, value: SchedulerConfig[K] | undefined): void => {
    if (value !== undefined) out[key] = value;
  };
  put('_class_name', c.string('_class_name'));
  put('num_train_timesteps', T);
  // 1 − β is a probability's complement: β in (0, 1) keeps every ᾱ_t positive and below 1.
  const betaStart = c.number('beta_start', { above: 0, below: 1 });
  const betaEnd = c.number('beta_end', { above: 0, below: 1 });
  put('beta_start', betaStart);
  put('beta_end', betaEnd);
  put('beta_schedule', c.string('beta_schedule'));
  const betas = c.numbers('trained_betas', { above: 0, below: 1 }, MAX_TRAIN_TIMESTEPS);
  if (betas !== undefined) out.trained_betas = betas;
  put('set_alpha_to_one', c.boolean('set_alpha_to_one'));
  put('steps_offset', c.integer('steps_offset', { min: 0, max: last }));
  put('timestep_spacing', c.string('timestep_spacing'));
  put('clip_sample', c.boolean('clip_sample'));
  put('clip_sample_range', c.number('clip_sample_range', { above: 0 }));
  put('prediction_type', c.string('prediction_type'));
  return out;
}

/** The values of model_index.json this project reads. */
export interface ModelIndex {
  /** the pipeline class, e.g. 'OnnxStableDiffusionPipeline' */
  className: string | undefined;
}

/** model_index.json, checked. Example: `readModelIndex({ _class_name: 'OnnxStableDiffusionPipeline' }).className`. */
export function readModelIndex(raw: Readonly<Record<string, unknown>>): ModelIndex {
  return { className: new ConfigValues('model_index.json', raw as Record<string, unknown>).string('_class_name') };
}

/** The values of unet/config.json this project reads (all optional: the graph's metadata comes first). */
export interface UnetConfig {
  /** latent channels, used when the graph leaves the sample's channel dimension open */
  inChannels: number | undefined;
  /** one entry per resolution level: 2^(levels − 1) is the UNet's downsampling */
  blockOutChannels: number[] | undefined;
  /** the latent side it was trained at */
  sampleSize: number | undefined;
}

/** unet/config.json, checked. Example: `readUnetConfig({ sample_size: 8 }).sampleSize` → 8. */
export function readUnetConfig(raw: Readonly<Record<string, unknown>>): UnetConfig {
  const c = new ConfigValues('unet/config.json', raw as Record<string, unknown>);
  return {
    inChannels: c.integer('in_channels', { min: 1, max: 4096 }),
    // 2^(levels − 1) must stay a sane image-side multiple: 8 levels (×128) is far beyond any SD UNet.
    blockOutChannels: c.numbers('block_out_channels', { integer: true, min: 1 }, 8),
    sampleSize: c.integer('sample_size', { min: 1, max: 4096 }),
  };
}

/** The values of vae_decoder/config.json this project reads. */
export interface VaeConfig {
  /** latents are divided by this before decoding */
  scalingFactor: number | undefined;
  /** image pixels per latent pixel, when the config says so directly */
  downsamplingFactor: number | undefined;
  /** one entry per resolution level: 2^(levels − 1) is the VAE factor when downsampling_factor is absent */
  blockOutChannels: number[] | undefined;
}

/** vae_decoder/config.json, checked. Example: `readVaeConfig({ scaling_factor: 0.18215 }).scalingFactor`. */
export function readVaeConfig(raw: Readonly<Record<string, unknown>>): VaeConfig {
  const c = new ConfigValues('vae_decoder/config.json', raw as Record<string, unknown>);
  return {
    scalingFactor: c.number('scaling_factor', { above: 0 }),
    downsamplingFactor: c.integer('downsampling_factor', { min: 1, max: 64 }),
    blockOutChannels: c.numbers('block_out_channels', { integer: true, min: 1 }, 7),
  };
}

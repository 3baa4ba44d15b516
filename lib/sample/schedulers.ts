// Diffusion schedulers with diffusers' semantics (PNDM/PLMS, DDIM, Euler discrete, DPM-Solver++ 2M), built from a
// scheduler_config.json. Formulas: diffusers' schedulers (scheduling_pndm.py, scheduling_ddim.py,
// scheduling_euler_discrete.py, scheduling_dpmsolver_multistep.py). Scalars are float64; latents are float32 and
// each update is computed per element in float64 then rounded once.
// A bad `steps` or scheduler name is an InputError; a config this module cannot follow is a ModelError naming
// scheduler/scheduler_config.json, since the config comes from the model folder. Every config value is checked
// (lib/model/configs.ts validateSchedulerConfig) before it is used, and every scheduler refuses more steps than
// num_train_timesteps, so no run indexes past the trained timesteps.
import { InputError, invalidInput, ModelError } from '../errors.js';
import { SCHEDULER_CONFIG_FILE, validateSchedulerConfig, type SchedulerConfig } from '../model/configs.js';

export type { SchedulerConfig } from '../model/configs.js';

export type SchedulerName = 'pndm' | 'ddim' | 'euler' | 'dpm++2m';
export const schedulerNames: readonly SchedulerName[] = ['pndm', 'ddim', 'euler', 'dpm++2m'];
type Spacing = 'leading' | 'linspace' | 'trailing';

function configError(message: string): ModelError {
  return new ModelError(SCHEDULER_CONFIG_FILE, `scheduler config: ${message}`);
}

/**
 * One sampling run. `timesteps[i]` is the timestep of UNet call i (PNDM makes steps+1 calls); the caller does
 * `x = scaleModelInput(x, i)`-style input scaling, calls the UNet with timesteps[i], then `x = step(eps, i, x)`.
 */
export interface Scheduler {
  readonly name: SchedulerName;
  readonly timesteps: readonly number[];
  /** Factor applied to the initial unit Gaussian noise. */
  readonly initNoiseSigma: number;
  /** The UNet input for call i (a new array, or x itself when the scheduler does no scaling). */
  scaleModelInput(x: Float32Array, i: number): Float32Array;
  /** The latents after UNet call i, given the guided noise prediction eps. Calls must come in order 0, 1, … */
  step(eps: Float32Array, i: number, x: Float32Array): Float32Array;
}

/**
 * Maps a scheduler name or a diffusers class name to a scheduler; an unknown one is an InputError naming `scheduler`.
 * Example: `parseSchedulerName('DPMSolverMultistepScheduler')` → `'dpm++2m'`.
 */
export function parseSchedulerName(name: string): SchedulerName {
  const n = name
    .toLowerCase()
    .replace(/scheduler$/, '')
    .replace(/[_\s]/g, '');
  if (n === 'pndm' || n === 'plms') return 'pndm';
  if (n === 'ddim') return 'ddim';
  if (n === 'euler' || n === 'eulerdiscrete') return 'euler';
  if (['dpm++2m', 'dpmpp2m', 'dpm-solver++', 'dpmsolver++', 'dpmsolvermultistep', 'dpm', 'dpmpp-2m', 'dpm++'].includes(n)) return 'dpm++2m';
  throw new InputError('scheduler', `unknown scheduler '${name}'; choose one of: ${schedulerNames.join(', ')}`, { received: name });
}

/** ᾱ_t for t = 0…T-1 (float64), from the config's beta schedule (checked first: a bad value is a ModelError). */
export function alphasCumprod(raw: SchedulerConfig): Float64Array {
  const config = validateSchedulerConfig(raw);
  const T = config.num_train_timesteps ?? 1000;
  const b0 = config.beta_start ?? 0.0001;
  const b1 = config.beta_end ?? 0.02;
  const schedule = config.beta_schedule ?? 'linear';
  const betas = new Float64Array(T);
  if (config.trained_betas != null) {
    if (config.trained_betas.length !== T) throw configError(`trained_betas has ${config.trained_betas.length} values, expected ${T}`);
    betas.set(config.trained_betas);
  } else if (schedule === 'scaled_linear') {
    const s0 = Math.sqrt(b0);
    const s1 = Math.sqrt(b1);
    for (let i = 0; i < T; i++) betas[i] = (s0 + ((s1 - s0) * i) / (T - 1)) ** 2;
  } else if (schedule === 'linear') {
    for (let i = 0; i < T; i++) betas[i] = b0 + ((b1 - b0) * i) / (T - 1);
  } else {
    throw configError(`beta_schedule '${schedule}' is not supported (scaled_linear, linear)`);
  }
  const out = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    prod *= 1 - betas[i]!;
    out[i] = prod;
  }
  return out;
}

function spacingOf(config: SchedulerConfig, fallback: Spacing): Spacing {
  const s = config.timestep_spacing ?? fallback;
  if (s !== 'leading' && s !== 'linspace' && s !== 'trailing') throw configError(`timestep_spacing '${s}' is not supported`);
  return s;
}

/** numpy.linspace, computed the way numpy does (i·step + a, last value exactly b) so that rounding agrees. */
function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  const step = (b - a) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? b : i * step + a));
}

/** numpy.round: halves go to the even neighbour. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Integer timesteps, descending, as diffusers' DDIM/PNDM-style `leading`/`trailing`/`linspace` spacing. */
function integerTimesteps(T: number, n: number, spacing: Spacing, offset: number): number[] {
  if (spacing === 'leading') {
    const r = Math.floor(T / n);
    return Array.from({ length: n }, (_, i) => i * r + offset).reverse();
  }
  if (spacing === 'trailing') {
    const r = T / n;
    return Array.from({ length: n }, (_, i) => roundHalfEven(T - i * r) - 1);
  }
  return linspace(0, T - 1, n)
    .map(roundHalfEven)
    .reverse();
}

/** np.interp of σ(t) = √((1-ᾱ_t)/ᾱ_t) at fractional t. */
function sigmaAt(ac: Float64Array, t: number): number {
  const sig = (k: number): number => Math.sqrt((1 - ac[k]!) / ac[k]!);
  const lo = Math.max(0, Math.min(ac.length - 1, Math.floor(t)));
  const hi = Math.min(ac.length - 1, lo + 1);
  const f = t - lo;
  return f === 0 || lo === hi ? sig(lo) : sig(lo) * (1 - f) + sig(hi) * f;
}

function checkSteps(steps: number): void {
  if (!Number.isInteger(steps) || steps <= 0) throw invalidInput('steps', 'a positive integer', steps);
}

function tooManySteps(steps: number, T: number): InputError {
  return new InputError('steps', `steps (${steps}) must not exceed num_train_timesteps (${T})`, { received: steps });
}

/** Timesteps must index ᾱ: integers (or, for linspace spacing, fractions) in [0, T−1]; a steps_offset can push them past. */
function checkTimesteps(timesteps: readonly number[], T: number, steps: number, config: SchedulerConfig): void {
  const bad = timesteps.find((t) => !(t >= 0 && t <= T - 1));
  if (bad !== undefined) {
    throw new InputError(
      'steps',
      `steps (${steps}) with the model's steps_offset (${config.steps_offset ?? 0}) gives timestep ${bad}, outside the trained timesteps 0…${T - 1}; use fewer steps`,
      { received: steps },
    );
  }
}

function checkPrediction(config: SchedulerConfig): void {
  const p = config.prediction_type ?? 'epsilon';
  if (p !== 'epsilon') throw configError(`prediction_type '${p}' is not supported (SD 1.x predicts epsilon)`);
}

class Pndm implements Scheduler {
  readonly name = 'pndm';
  readonly timesteps: number[];
  readonly initNoiseSigma = 1;
  private readonly ac: Float64Array;
  private readonly finalAlpha: number;
  private readonly ratio: number;
  private ets: Float32Array[] = [];
  private counter = 0;
  private curSample: Float32Array | null = null;

  constructor(config: SchedulerConfig, steps: number) {
    this.ac = alphasCumprod(config);
    const T = this.ac.length;
    if (steps > T) throw tooManySteps(steps, T);
    this.finalAlpha = (config.set_alpha_to_one ?? false) ? 1 : this.ac[0]!;
    this.ratio = Math.floor(T / steps);
    const asc = integerTimesteps(T, steps, spacingOf(config, 'leading'), config.steps_offset ?? 0).reverse();
    checkTimesteps(asc, T, steps, config);
    // PLMS warm-up: the second-to-last ascending timestep is repeated, so N steps make N+1 UNet calls.
    const withDup = steps >= 2 ? [...asc.slice(0, -1), asc[asc.length - 2]!, asc[asc.length - 1]!] : asc;
    this.timesteps = withDup.reverse();
  }

  scaleModelInput(x: Float32Array): Float32Array {
    return x;
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    let t = this.timesteps[i]!;
    let prev = t - this.ratio;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(eps);
    } else {
      prev = t;
      t = t + this.ratio;
    }
    const n = x.length;
    const e = new Float64Array(n);
    const ets = this.ets;
    const L = ets.length;
    let base = x;
    if (L === 1 && this.counter === 0) {
      for (let k = 0; k < n; k++) e[k] = eps[k]!;
      this.curSample = x;
    } else if (L === 1 && this.counter === 1) {
      const e1 = ets[0]!;
      for (let k = 0; k < n; k++) e[k] = (eps[k]! + e1[k]!) / 2;
      base = this.curSample!;
      this.curSample = null;
    } else if (L === 2) {
      const [a, b] = [ets[1]!, ets[0]!];
      for (let k = 0; k < n; k++) e[k] = (3 * a[k]! - b[k]!) / 2;
    } else if (L === 3) {
      const [a, b, c] = [ets[2]!, ets[1]!, ets[0]!];
      for (let k = 0; k < n; k++) e[k] = (23 * a[k]! - 16 * b[k]! + 5 * c[k]!) / 12;
    } else {
      const [a, b, c, d] = [ets[3]!, ets[2]!, ets[1]!, ets[0]!];
      for (let k = 0; k < n; k++) e[k] = (55 * a[k]! - 59 * b[k]! + 37 * c[k]! - 9 * d[k]!) / 24;
    }
    const at = this.ac[t]!;
    const ap = prev >= 0 ? this.ac[prev]! : this.finalAlpha;
    const coeff = Math.sqrt(ap / at);
    const denom = at * Math.sqrt(1 - ap) + Math.sqrt(at * (1 - at) * ap);
    const out = new Float32Array(n);
    for (let k = 0; k < n; k++) out[k] = coeff * base[k]! - ((ap - at) * e[k]!) / denom;
    this.counter++;
    return out;
  }
}

class Ddim implements Scheduler {
  readonly name = 'ddim';
  readonly timesteps: number[];
  readonly initNoiseSigma = 1;
  private readonly ac: Float64Array;
  private readonly finalAlpha: number;
  private readonly ratio: number;
  private readonly clip: number | null;

  constructor(config: SchedulerConfig, steps: number) {
    this.ac = alphasCumprod(config);
    const T = this.ac.length;
    if (steps > T) throw tooManySteps(steps, T);
    this.finalAlpha = (config.set_alpha_to_one ?? true) ? 1 : this.ac[0]!;
    this.ratio = Math.floor(T / steps);
    this.timesteps = integerTimesteps(T, steps, spacingOf(config, 'leading'), config.steps_offset ?? 0);
    checkTimesteps(this.timesteps, T, steps, config);
    this.clip = (config.clip_sample ?? true) ? (config.clip_sample_range ?? 1) : null;
  }

  scaleModelInput(x: Float32Array): Float32Array {
    return x;
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    const t = this.timesteps[i]!;
    const prev = t - this.ratio;
    const at = this.ac[t]!;
    const ap = prev >= 0 ? this.ac[prev]! : this.finalAlpha;
    const out = new Float32Array(x.length);
    const sa = Math.sqrt(at);
    const sb = Math.sqrt(1 - at);
    for (let k = 0; k < x.length; k++) {
      let x0 = (x[k]! - sb * eps[k]!) / sa;
      let e = eps[k]!;
      if (this.clip !== null) {
        x0 = Math.min(this.clip, Math.max(-this.clip, x0));
        e = (x[k]! - sa * x0) / sb;
      }
      out[k] = Math.sqrt(ap) * x0 + Math.sqrt(1 - ap) * e;
    }
    return out;
  }
}

class Euler implements Scheduler {
  readonly name = 'euler';
  readonly timesteps: number[];
  readonly sigmas: number[];
  readonly initNoiseSigma: number;

  constructor(config: SchedulerConfig, steps: number) {
    const ac = alphasCumprod(config);
    const T = ac.length;
    if (steps > T) throw tooManySteps(steps, T);
    const spacing = spacingOf(config, 'linspace');
    this.timesteps =
      spacing === 'linspace' ? linspace(0, T - 1, steps).reverse() : integerTimesteps(T, steps, spacing, config.steps_offset ?? 0);
    checkTimesteps(this.timesteps, T, steps, config);
    this.sigmas = [...this.timesteps.map((t) => sigmaAt(ac, t)), 0];
    // A loop, not Math.max(...sigmas): a spread of many thousands of values overflows the call stack.
    const smax = this.sigmas.reduce((m, s) => Math.max(s, m), -Infinity);
    this.initNoiseSigma = spacing === 'leading' ? Math.sqrt(smax * smax + 1) : smax;
  }

  scaleModelInput(x: Float32Array, i: number): Float32Array {
    const s = 1 / Math.sqrt(this.sigmas[i]! ** 2 + 1);
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) out[k] = x[k]! * s;
    return out;
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    // s_churn = 0: x0 = x - σ ε, d = (x - x0)/σ = ε, x' = x + d (σ_next - σ).
    const dt = this.sigmas[i + 1]! - this.sigmas[i]!;
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) out[k] = x[k]! + eps[k]! * dt;
    return out;
  }
}

class DpmPP2M implements Scheduler {
  readonly name = 'dpm++2m';
  readonly timesteps: number[];
  readonly sigmas: number[];
  readonly initNoiseSigma = 1;
  private prevModel: Float64Array | null = null;

  constructor(config: SchedulerConfig, steps: number) {
    const ac = alphasCumprod(config);
    const T = ac.length;
    if (steps > T) throw tooManySteps(steps, T);
    const spacing = spacingOf(config, 'linspace');
    this.timesteps =
      spacing === 'linspace'
        ? linspace(0, T - 1, steps + 1)
            .map(roundHalfEven)
            .reverse()
            .slice(0, steps)
        : spacing === 'leading'
          ? Array.from({ length: steps + 1 }, (_, i) => i * Math.floor(T / (steps + 1)) + (config.steps_offset ?? 0))
              .reverse()
              .slice(0, steps)
          : integerTimesteps(T, steps, spacing, 0);
    checkTimesteps(this.timesteps, T, steps, config);
    // final_sigmas_type "zero": the last step lands on σ = 0.
    this.sigmas = [...this.timesteps.map((t) => sigmaAt(ac, t)), 0];
  }

  scaleModelInput(x: Float32Array): Float32Array {
    return x;
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    const at = (s: number): number => 1 / Math.sqrt(s * s + 1);
    const lambda = (s: number): number => Math.log(at(s)) - Math.log(s * at(s));
    const sCur = this.sigmas[i]!;
    const sNext = this.sigmas[i + 1]!;
    const aCur = at(sCur);
    const stCur = sCur * aCur;
    const aNext = at(sNext);
    const stNext = sNext * aNext;
    const h = lambda(sNext) - lambda(sCur);
    const em1 = Math.exp(-h) - 1;
    const ratio = stNext / stCur;
    const n = x.length;
    const m = new Float64Array(n);
    for (let k = 0; k < n; k++) m[k] = (x[k]! - stCur * eps[k]!) / aCur;
    const out = new Float32Array(n);
    const last = i === this.timesteps.length - 1;
    if (this.prevModel === null || last) {
      for (let k = 0; k < n; k++) out[k] = ratio * x[k]! - aNext * em1 * m[k]!;
    } else {
      const sPrev = this.sigmas[i - 1]!;
      const r0 = (lambda(sCur) - lambda(sPrev)) / h;
      const m1 = this.prevModel;
      for (let k = 0; k < n; k++) {
        const d1 = (m[k]! - m1[k]!) / r0;
        out[k] = ratio * x[k]! - aNext * em1 * m[k]! - 0.5 * aNext * em1 * d1;
      }
    }
    this.prevModel = m;
    return out;
  }
}

/** The scheduler the config's _class_name names; one this module does not implement is the model's problem. */
function schedulerOfConfig(config: SchedulerConfig): SchedulerName {
  const cls = config._class_name ?? 'PNDMScheduler';
  try {
    return parseSchedulerName(cls);
  } catch {
    throw configError(
      `_class_name '${cls}' is not a scheduler this library implements (${schedulerNames.join(', ')}); pass a scheduler name to use one of those`,
    );
  }
}

/**
 * A fresh scheduler for one run of `steps` steps. The config is the pipeline's scheduler_config.json; `name`
 * overrides its class (the betas and offsets still come from the config). Example:
 * `createScheduler(pipeline.schedulerConfig, 50)` (PNDM for SD 1.x, 51 UNet calls) or `createScheduler(cfg, 20, 'dpm++2m')`.
 */
export function createScheduler(raw: SchedulerConfig, steps: number, name?: SchedulerName): Scheduler {
  checkSteps(steps);
  const config = validateSchedulerConfig(raw);
  checkPrediction(config);
  const kind = name ?? schedulerOfConfig(config);
  switch (kind) {
    case 'pndm':
      return new Pndm(config, steps);
    case 'ddim':
      return new Ddim(config, steps);
    case 'euler':
      return new Euler(config, steps);
    case 'dpm++2m':
      return new DpmPP2M(config, steps);
  }
}

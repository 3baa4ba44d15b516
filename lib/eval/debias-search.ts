// The numbers of the debiasing protocol: the share p of images that show the edit's attribute, the distance from a
// balanced model Δ = |p − 0.5| / 0.5 (0 = half and half, 1 = all one way), and the per-profession search for the λ
// that brings p closest to 0.5 on the validation prompt. A larger λ pulls the edit back towards the unedited weights
// (W' = (λW + Σ v*cᵀ)(λI + Σ ccᵀ)⁻¹), so p falls from about 1 (small λ: the full edit) to the unedited share (large
// λ): the search bisects log λ on that assumption, a bounded number of rounds, each round one set of seeds.
import { InputError } from '../errors.js';

/** How the images of one prompt were judged. */
export interface AttributeCounts {
  /** images judged to show the attribute the edit names */
  attribute: number;
  /** images judged to show the other attribute (the opposite gender; the shape's default colour) */
  other: number;
  /** images the judge could put in neither class (the toy analogue: a hue between the two colours, or no shape) */
  inBetween: number;
}

/**
 * p: the share of a prompt's images that show the attribute; in-between images count as not showing it.
 * Example: `attributeShare({ attribute: 3, other: 4, inBetween: 1 })` is 0.375.
 */
export function attributeShare(c: AttributeCounts): number {
  const total = c.attribute + c.other + c.inBetween;
  if (total === 0) throw new InputError('counts', 'no image was judged: p is undefined');
  return c.attribute / total;
}

/**
 * Δ = |p − 0.5| / 0.5: 0 when half the images show the attribute, 1 when all or none do.
 * Example: `balanceDistance(0.75)` is 0.5.
 */
export function balanceDistance(p: number): number {
  if (!(p >= 0 && p <= 1)) throw new InputError('p', `p must be in [0, 1], got ${p}`, { received: p });
  return Math.abs(p - 0.5) / 0.5;
}

export interface LambdaSearchOptions {
  /** the smallest and largest λ tried (0 < min < max) */
  min: number;
  max: number;
  /** the number of rounds, i.e. of measurements (≥ 1) */
  rounds: number;
  /** the share aimed at (default 0.5) */
  target?: number;
}

/** One round of the search: the λ measured and the share p found there. */
export interface SearchRound {
  lambda: number;
  p: number;
}

export interface LambdaSearchResult {
  /** the measured λ whose p is closest to the target (the later one on a tie: it comes from a narrower interval) */
  lambda: number;
  p: number;
  rounds: SearchRound[];
}

/**
 * Bisection on log λ in [min, max]: each round measures p at the geometric middle of the interval and keeps the half
 * where the target lies (p above the target: a larger λ is needed). It stops after `rounds` measurements, or at once
 * when a round hits the target exactly. Every λ it measures, and so the answer, lies strictly inside (min, max).
 *
 * @example
 *   await searchLambda(async (l) => 1 / (1 + l / 3), { min: 0.01, max: 100, rounds: 12 });
 *   // { lambda: ≈3, p: ≈0.5, rounds: [...12 rounds] }
 */
export async function searchLambda(measure: (lambda: number) => Promise<number>, o: LambdaSearchOptions): Promise<LambdaSearchResult> {
  const target = o.target ?? 0.5;
  if (!(Number.isFinite(o.min) && o.min > 0 && Number.isFinite(o.max) && o.max > o.min))
    throw new InputError('min', `the λ range must satisfy 0 < min < max, got [${o.min}, ${o.max}]`);
  if (!(Number.isSafeInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 64))
    throw new InputError('rounds', `rounds must be an integer in 1..64, got ${o.rounds}`, { received: o.rounds });
  let lo = Math.log(o.min);
  let hi = Math.log(o.max);
  const rounds: SearchRound[] = [];
  let best: SearchRound | undefined;
  for (let r = 0; r < o.rounds; r++) {
    const lambda = Math.exp((lo + hi) / 2);
    const p = await measure(lambda);
    if (!(p >= 0 && p <= 1))
      throw new InputError('measure', `the measured share must be in [0, 1], got ${p} at λ = ${lambda}`, { received: p });
    rounds.push({ lambda, p });
    if (best === undefined || Math.abs(p - target) <= Math.abs(best.p - target)) best = { lambda, p };
    if (p === target) break;
    if (p > target) lo = Math.log(lambda);
    else hi = Math.log(lambda);
  }
  return { lambda: best!.lambda, p: best!.p, rounds };
}

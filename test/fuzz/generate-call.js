// The fuzz suite's call generator: one seed → one call of the native-backed solver API (which function, its
// arguments) plus the outcome the documented contract promises for it (docs/solver.md "API", docs/fuzzing.md
// "Contract"). About 60% of the calls are valid and carry what the float64 oracle (oracle.js) needs to check the
// result; the rest are mutated into one invalid argument each and say which error class must come back and which
// argument its message must name. Pure and deterministic: the same seed gives the same call on every machine,
// which is what lets test/fuzz/regressions.json keep a failing call as a single number.
import { mutationsOf } from './mutations.js';
import { BUILDERS, buildLowRankOnlyDenseRoute, random } from './valid-calls.js';

export { OUTPUT_SENTINEL } from './valid-calls.js';

/** Bumped whenever a change here, in valid-calls.js or in mutations.js makes old seeds mean other calls. */
export const GENERATOR_VERSION = 1;

/** Functions the fuzzer calls, with how often (weights, summing to 1). */
const FUNCTION_WEIGHTS = [
  ['solveEdits', 0.34],
  ['patchWeights', 0.2],
  ['applyToEmbeddings', 0.2],
  ['composeTransforms', 0.13],
  ['denseOf', 0.1],
  ['availableBackends', 0.03],
];

/** Share of calls that get one invalid argument. */
const INVALID_SHARE = 0.4;

/**
 * The call for `seed`: { seed, fn, case, args, outs, expect, oracle }. `case` is 'valid' or the mutation's name;
 * `expect` is { outcome: 'accept' }, or { outcome: 'reject' | 'finite-or-reject', errorClass, names, aliases,
 * pattern? }.
 *
 * @example
 *   const call = generateCall(42);
 *   call.fn;        // 'patchWeights'
 *   call.expect;    // { outcome: 'reject', errorClass: 'RangeError', names: ['edit.dense'], aliases: [...] }
 */
export function generateCall(seed) {
  const r = random(seed);
  let x = r.uniform();
  let fn = FUNCTION_WEIGHTS[FUNCTION_WEIGHTS.length - 1][0];
  for (const [name, weight] of FUNCTION_WEIGHTS) {
    if (x < weight) {
      fn = name;
      break;
    }
    x -= weight;
  }
  const invalid = r.chance(INVALID_SHARE);
  if (invalid && fn === 'applyToEmbeddings' && r.chance(0.1)) {
    return { seed, ...buildLowRankOnlyDenseRoute(r), expect: { outcome: 'accept' } };
  }
  const call = { seed, case: 'valid', ...BUILDERS[fn](r), expect: { outcome: 'accept' } };
  if (!invalid) return call;
  const mutations = mutationsOf(call);
  // A mutation may not apply to this particular call (returns null): try others, in a seeded order.
  for (let tries = 0; tries < 8 && mutations.length > 0; tries++) {
    const k = r.int(0, mutations.length - 1);
    const [name, mutate] = mutations[k];
    const expect = mutate(r);
    if (expect) {
      call.case = name;
      call.expect = expect;
      return call;
    }
    mutations.splice(k, 1);
  }
  return call;
}

/**
 * The one case that is not a seed: a buffer shrunk under a pending native call (child.js --case). It runs in a
 * child of its own, never among the seeded calls, since today it kills the process; this is its "seed" in the
 * output lines and in regressions.json.
 */
export const SHRINK_CASE = 'shrink-during-call';

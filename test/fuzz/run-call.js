// One fuzz call, made and judged: calls the API function the generator picked and compares what happened with the
// contract's expectation. Verdicts: ok, wrong-accept (an invalid call went through, or a 'finite-or-reject' call
// returned a non-finite value), wrong-reject (a valid call was refused), wrong-class (refused with the wrong error
// class, or a message that does not name the argument), inaccurate (accepted, but the result differs from the
// float64 oracle), wrote-on-reject (refused correctly, but a caller's output buffer was written), unhandled (an
// engine error such as "Cannot read properties of null" escaped, or a Promise API threw synchronously).
import { OUTPUT_SENTINEL } from './generate-call.js';
import { allFinite, checkResult } from './oracle.js';

/** Messages of errors the engine throws for a bug in the library rather than one the library throws on purpose. */
const ENGINE_ERROR =
  /Cannot read propert|is not a function|is not iterable|is not a constructor|Cannot convert|Cannot destructure|undefined is not|null is not|Maximum call stack|Cannot set propert/;

/**
 * The API function `name`, resolving names that are being renamed (composeEdits → composeTransforms).
 *
 * @example
 *   apiFunction(await import('../../lib/index.js'), 'composeTransforms');   // composeTransforms or composeEdits
 */
export function apiFunction(api, name) {
  if (name === 'composeTransforms') return api.composeTransforms ?? api.composeEdits;
  return api[name];
}

function describeError(err) {
  if (err instanceof Error) return `${err.constructor.name}: ${err.message}`.slice(0, 300);
  return `non-Error thrown: ${String(err).slice(0, 200)}`;
}

function classMatches(err, errorClass) {
  if (errorClass === 'TypeError') return err instanceof TypeError;
  if (errorClass === 'RangeError') return err instanceof RangeError;
  return err instanceof Error;
}

/** Judges a rejection against the expectation: a verdict and its detail. */
function judgeRejection(call, err, strictNames) {
  const { expect } = call;
  const got = describeError(err);
  if (!(err instanceof Error) || ENGINE_ERROR.test(err.message)) return { verdict: 'unhandled', detail: got };
  if (expect.outcome === 'accept') return { verdict: 'wrong-reject', detail: got };
  if (!classMatches(err, expect.errorClass)) return { verdict: 'wrong-class', detail: `want ${expect.errorClass}, got ${got}` };
  const accepted = strictNames ? expect.names : [...expect.names, ...expect.aliases];
  if (accepted.length > 0 && !accepted.some((name) => err.message.includes(name))) {
    return { verdict: 'wrong-class', detail: `message does not name ${expect.names.join(' / ')}: ${got}` };
  }
  if (expect.pattern && !new RegExp(expect.pattern, 'i').test(err.message)) {
    return { verdict: 'wrong-class', detail: `message does not match /${expect.pattern}/i: ${got}` };
  }
  // An overflow can only be seen in the result, so a 'finite-or-reject' refusal may leave its outputs written.
  const written = expect.outcome === 'finite-or-reject' ? -1 : call.outs.findIndex((o) => o.some((v) => v !== OUTPUT_SENTINEL));
  if (written >= 0) return { verdict: 'wrote-on-reject', detail: `caller output buffer ${written} written; ${got}` };
  const namedByAliasOnly = expect.names.length > 0 && !expect.names.some((name) => err.message.includes(name));
  return { verdict: 'ok', detail: namedByAliasOnly ? `alias-only: ${got}` : undefined };
}

/** Judges a call that went through. */
function judgeResult(call, result) {
  const { expect } = call;
  if (expect.outcome === 'reject') {
    return { verdict: 'wrong-accept', detail: `want ${expect.errorClass} naming ${expect.names.join(' / ') || '(any)'}, but it resolved` };
  }
  if (expect.outcome === 'finite-or-reject') {
    return allFinite(result)
      ? { verdict: 'ok' }
      : { verdict: 'wrong-accept', detail: 'resolved with non-finite values instead of a RangeError' };
  }
  const check = checkResult(call, result);
  if (check.ok) return { verdict: 'ok', error: check.error };
  return { verdict: 'inaccurate', detail: check.detail, error: check.error };
}

/**
 * Makes the call and returns { verdict, detail?, error? } (error: the worst relative error of an accepted result).
 *
 * @example
 *   await runCall(api, generateCall(7));   // { verdict: 'ok', error: 2.4e-7 }
 */
export async function runCall(api, call, { strictNames = false } = {}) {
  const f = apiFunction(api, call.fn);
  if (typeof f !== 'function') return { verdict: 'unhandled', detail: `the API has no function ${call.fn}` };
  let pending;
  try {
    pending = f(...call.args);
  } catch (err) {
    if (call.fn !== 'availableBackends') {
      return { verdict: 'unhandled', detail: `threw synchronously instead of rejecting: ${describeError(err)}` };
    }
    return judgeRejection(call, err, strictNames);
  }
  let result;
  try {
    result = await pending;
  } catch (err) {
    return judgeRejection(call, err, strictNames);
  }
  return judgeResult(call, result);
}

// The fuzz suite's invalid calls: each mutation changes one argument of a valid call (valid-calls.js) and returns
// the refusal the contract promises (docs/fuzzing.md "Contract"): the error class, the caller's path to the
// argument that the message must name (`names`), and the names the addon's own checks use for the same buffer
// today (`aliases`: "rows" for embeddings, "A"/"B" for D/G, …), accepted unless --strict-names. A mutation
// returns null where it does not apply to that call.
import { makeTransform, sentinelBuffer } from './valid-calls.js';

const reject = (errorClass, names, aliases = []) => ({ outcome: 'reject', errorClass, names, aliases });
// 3e38 is finite: the call may go through, but only if every output is finite too; else a RangeError that names
// the argument or says that the result overflows (a check of the outputs cannot always tell which input did it).
const OVERFLOW_WORDS = ['overflow', 'non-finite', 'not finite', 'too large', 'float32'];
const finiteOrReject = (names, aliases = []) => ({
  outcome: 'finite-or-reject',
  errorClass: 'RangeError',
  names,
  aliases: [...aliases, ...OVERFLOW_WORDS],
});

/** Aliases the addon's checkFinite / checkNoOverlap messages use for any transform buffer. */
const TRANSFORM_ALIASES = ['rows', 'A', 'B', 'M', 'dense[0]', 'edit 0'];

function wrongType(r, length) {
  return r.pick([() => new Float64Array(length), () => Array.from({ length }, () => 0.5), () => null, () => 'x', () => 5])();
}

/** A copy of `a` in a resizable ArrayBuffer or a growable SharedArrayBuffer (length-tracking or fixed view). */
function resizableCopy(r, a) {
  const bytes = a.byteLength;
  const maxByteLength = bytes + 4 * r.int(1, 64);
  const buffer = r.chance(0.5) ? new ArrayBuffer(bytes, { maxByteLength }) : new SharedArrayBuffer(bytes, { maxByteLength });
  const view = r.chance(0.5) ? new Float32Array(buffer) : new Float32Array(buffer, 0, a.length);
  view.set(a);
  return view;
}

/** Writes NaN / ±Inf (or ±3e38 when `huge`) at a random index of `a`. */
function poke(r, a, huge) {
  const value = huge ? r.pick([3e38, -3e38]) : r.pick([NaN, Infinity, -Infinity]);
  a[r.int(0, a.length - 1)] = value;
  return value;
}

/** The Float32Array fields of a transform `edit` named `at` ('edit', 'a', 'b'), as [path, get, set]. */
function transformBuffers(edit, at) {
  const list = [];
  if (edit.dense) list.push([`${at}.dense`, () => edit.dense, (v) => (edit.dense = v)]);
  if (edit.lowRank) {
    for (const key of ['D', 'G']) {
      list.push([`${at}.lowRank.${key}`, () => edit.lowRank[key], (v) => (edit.lowRank[key] = v)]);
    }
  }
  return list;
}

/** Mutations of one transform argument (patchWeights' / applyToEmbeddings' / denseOf's `edit`, compose's a/b). */
function transformMutations(edit, at, setEdit) {
  const buffers = transformBuffers(edit, at);
  return [
    [
      'transform-wrong-type',
      (r) => {
        setEdit(r.pick([null, 5, 'x', undefined]));
        return reject('TypeError', [at]);
      },
    ],
    [
      'transform-d-invalid',
      (r) => {
        const d = r.pick([2.5, 0, -3, 2 ** 31, NaN]);
        edit.d = d;
        return reject('RangeError', [`${at}.d`], [at]);
      },
    ],
    [
      'transform-d-wrong-type',
      (r) => {
        edit.d = r.pick(['4', null, undefined]);
        return reject('TypeError', [`${at}.d`]);
      },
    ],
    [
      'transform-no-form',
      () => {
        delete edit.dense;
        delete edit.lowRank;
        return reject('RangeError', [at]);
      },
    ],
    [
      'transform-buffer-wrong-type',
      (r) => {
        const [path, get, set] = r.pick(buffers);
        set(wrongType(r, get().length));
        return reject('TypeError', [path]);
      },
    ],
    [
      'transform-buffer-wrong-length',
      (r) => {
        const [path, get, set] = r.pick(buffers);
        const a = get();
        set(r.chance(0.5) ? a.subarray(0, a.length - 1) : new Float32Array(a.length + r.int(1, 5)));
        return reject('RangeError', [path]);
      },
    ],
    [
      'transform-rows-wrong',
      (r) => {
        if (!edit.lowRank) return null;
        edit.lowRank.rows = r.pick([edit.lowRank.rows + 1, 0, 1.5]);
        return reject('RangeError', [`${at}.lowRank`]);
      },
    ],
    [
      'transform-non-finite',
      (r) => {
        const [path, get] = r.pick(buffers);
        poke(r, get(), false);
        return reject('RangeError', [path], TRANSFORM_ALIASES);
      },
    ],
    [
      'transform-huge',
      (r) => {
        const [path, get] = r.pick(buffers);
        poke(r, get(), true);
        return finiteOrReject([path], TRANSFORM_ALIASES);
      },
    ],
    [
      'transform-resizable',
      (r) => {
        const [path, get, set] = r.pick(buffers);
        set(resizableCopy(r, get()));
        return reject('TypeError', [path]);
      },
    ],
  ];
}

/** Mutations of the trailing `opts` of patchWeights / applyToEmbeddings (index 2 of args). */
function outputOptionMutations(call, length, inputToAlias) {
  const opts = () => {
    if (call.args.length < 3 || call.args[2] === undefined) call.args[2] = {};
    return call.args[2];
  };
  return [
    [
      'opts-wrong-type',
      (r) => {
        call.args[2] = r.pick([null, 5, 'x', true]);
        return reject('TypeError', ['opts']);
      },
    ],
    [
      'backend-unknown',
      (r) => {
        opts().backend = r.pick(['gpu', 'CPU', 'tpu', '', 'cpu ']);
        return reject('RangeError', ['opts.backend']);
      },
    ],
    [
      'backend-cuda',
      () => {
        opts().backend = 'cuda';
        return { ...reject('Error', []), pattern: 'cuda|CPU' };
      },
    ],
    [
      'backend-wrong-type',
      (r) => {
        opts().backend = r.pick([5, null, {}]);
        return reject('TypeError', ['opts.backend']);
      },
    ],
    [
      'out-wrong-length',
      (r) => {
        opts().out = sentinelBuffer(r.chance(0.5) && length > 1 ? length - r.int(1, Math.min(length - 1, 5)) : length + r.int(1, 5));
        call.outs.push(opts().out);
        return reject('RangeError', ['opts.out']);
      },
    ],
    [
      'out-wrong-type',
      (r) => {
        opts().out = r.pick([new Float64Array(length), Array.from({ length }, () => 0), 'x', 5, null]);
        return reject('TypeError', ['opts.out']);
      },
    ],
    [
      'out-aliases-input',
      () => {
        opts().out = inputToAlias();
        return reject('RangeError', ['opts.out'], ['out', 'patched[0]', 'shares memory']);
      },
    ],
    [
      'out-resizable',
      (r) => {
        opts().out = resizableCopy(r, sentinelBuffer(length));
        call.outs.push(opts().out);
        return reject('TypeError', ['opts.out']);
      },
    ],
  ];
}

function solveMutations(call) {
  const [d, edits] = call.args;
  const opts = () => {
    if (call.args.length < 3) call.args[2] = {};
    return call.args[2];
  };
  const i = edits.length - 1; // the last edit: a bad edit anywhere must stop the whole batch
  const at = `edits[${i}]`;
  const edit = edits[i];
  const n = edit.source.length / d;
  const list = [
    [
      'd-invalid',
      (r) => {
        const bad = r.pick([2.5, 0, -3, 2 ** 31, NaN, Infinity]);
        call.args[0] = bad;
        return reject('RangeError', ['d'], bad === 2 ** 31 ? ['edits[0].source'] : []);
      },
    ],
    [
      'd-wrong-type',
      (r) => {
        call.args[0] = r.pick(['4', null, undefined]);
        return reject('TypeError', ['d']);
      },
    ],
    [
      'edits-wrong-type',
      (r) => {
        call.args[1] = r.pick([{}, null, 'x', 5, edit.source, edit]);
        return reject('TypeError', ['edits']);
      },
    ],
    [
      'edits-empty',
      () => {
        call.args[1] = [];
        return reject('RangeError', ['edits']);
      },
    ],
    [
      'edits-sparse',
      (r) => {
        // `new Array(k)` with one element set: the holes read as undefined and must be named, not skipped.
        const k = r.int(2, 4);
        const sparse = new Array(k);
        const set = r.int(0, k - 1);
        sparse[set] = edit;
        call.args[1] = sparse;
        if (call.args[2]?.out) delete call.args[2].out;
        call.outs.length = 0;
        const hole = set === 0 ? 1 : 0;
        return reject('TypeError', [`edits[${hole}]`]);
      },
    ],
    [
      'edit-wrong-type',
      (r) => {
        edits[i] = r.pick([null, 5, 'x', undefined]);
        return reject('TypeError', [at]);
      },
    ],
    [
      'source-wrong-type',
      (r) => {
        const key = r.pick(['source', 'destination']);
        edit[key] = wrongType(r, edit[key].length);
        return reject('TypeError', [`${at}.${key}`]);
      },
    ],
    [
      'source-not-whole-rows',
      (r) => {
        if (d < 2) return null;
        const cut = r.int(1, d - 1);
        edit.source = edit.source.subarray(0, edit.source.length - cut);
        edit.destination = edit.destination.subarray(0, edit.destination.length - cut);
        delete edit.rows;
        return reject('RangeError', [`${at}.source`]);
      },
    ],
    [
      'destination-length-differs',
      (r) => {
        edit.destination = r.chance(0.5)
          ? edit.destination.subarray(0, edit.destination.length - d)
          : new Float32Array(edit.destination.length + d);
        if (edit.destination.length === 0) edit.destination = new Float32Array(edit.source.length + d);
        return reject('RangeError', [`${at}.destination`]);
      },
    ],
    [
      'source-empty',
      () => {
        edit.source = new Float32Array(0);
        edit.destination = new Float32Array(0);
        delete edit.rows;
        return reject('RangeError', [`${at}.source`]);
      },
    ],
    [
      'rows-wrong',
      (r) => {
        const bad = r.pick([n + 1, 0, 2.5, '3']);
        edit.rows = bad;
        return reject(typeof bad === 'string' ? 'TypeError' : 'RangeError', [`${at}.rows`]);
      },
    ],
    [
      'lambda-invalid',
      (r) => {
        edit.lambda = r.pick([0, -1, -1e-9, NaN, Infinity, -Infinity]);
        return reject('RangeError', [`${at}.lambda`]);
      },
    ],
    [
      'lambda-wrong-type',
      (r) => {
        edit.lambda = r.pick(['0.1', true, {}]);
        return reject('TypeError', [`${at}.lambda`]);
      },
    ],
    [
      'source-non-finite',
      (r) => {
        const key = r.pick(['source', 'destination']);
        poke(r, edit[key], false);
        return reject('RangeError', [`${at}.${key}`], [`edit ${i}: ${key}`]);
      },
    ],
    [
      'source-huge',
      (r) => {
        const key = r.pick(['source', 'destination']);
        poke(r, edit[key], true);
        return finiteOrReject([`${at}.${key}`], [`edit ${i}: ${key}`]);
      },
    ],
    [
      'source-resizable',
      (r) => {
        const key = r.pick(['source', 'destination']);
        edit[key] = resizableCopy(r, edit[key]);
        return reject('TypeError', [`${at}.${key}`]);
      },
    ],
    [
      'opts-wrong-type',
      (r) => {
        call.args[2] = r.pick([null, 5, 'x', true]);
        return reject('TypeError', ['opts']);
      },
    ],
    [
      'opts-flag-wrong-type',
      (r) => {
        const key = r.pick(['lowRank', 'dense']);
        opts()[key] = r.pick(['yes', 1]);
        return reject('TypeError', [`opts.${key}`]);
      },
    ],
    [
      'opts-nothing-asked',
      () => {
        Object.assign(opts(), { lowRank: false, dense: false });
        delete opts().weights;
        if (opts().out) opts().out = opts().out.map(() => ({}));
        call.outs.length = 0;
        return reject('RangeError', ['opts']);
      },
    ],
    [
      'backend-unknown',
      (r) => {
        opts().backend = r.pick(['gpu', 'CPU', 'tpu', '', 'cpu ']);
        return reject('RangeError', ['opts.backend']);
      },
    ],
    [
      'backend-cuda',
      () => {
        opts().backend = 'cuda';
        return { ...reject('Error', []), pattern: 'cuda' };
      },
    ],
    [
      'out-count-wrong',
      (r) => {
        const count = r.pick([0, edits.length + 1]);
        opts().out = Array.from({ length: count }, () => ({}));
        call.outs.length = 0;
        return reject('RangeError', ['opts.out']);
      },
    ],
    [
      'out-entry-wrong-type',
      (r) => {
        opts().out = edits.map(() => ({}));
        opts().out[i] = r.pick([null, 5, 'x']);
        call.outs.length = 0;
        return reject('TypeError', [`opts.out[${i}]`]);
      },
    ],
    [
      'out-buffer-wrong-length',
      (r) => {
        const o = opts();
        if ((o.lowRank ?? true) === false) return null;
        o.out = edits.map(() => ({}));
        const key = r.pick(['D', 'G']);
        o.out[i][key] = sentinelBuffer(n * d + r.pick([-1, 1, d]));
        call.outs = [o.out[i][key]];
        return reject('RangeError', [`opts.out[${i}].${key}`]);
      },
    ],
    [
      'out-aliases-input',
      () => {
        const o = opts();
        if ((o.lowRank ?? true) === false) return null;
        o.out = edits.map(() => ({}));
        o.out[i].G = edit.source;
        call.outs.length = 0;
        return reject('RangeError', [`opts.out[${i}].G`], [`outG[${i}]`, 'shares memory']);
      },
    ],
    [
      'out-resizable',
      (r) => {
        const o = opts();
        if ((o.lowRank ?? true) === false) return null;
        o.out = edits.map(() => ({}));
        o.out[i].D = resizableCopy(r, sentinelBuffer(n * d));
        call.outs = [o.out[i].D];
        return reject('TypeError', [`opts.out[${i}].D`]);
      },
    ],
  ];
  const weights = call.args[2]?.weights;
  if (weights) {
    list.push(
      [
        'weights-wrong-type',
        (r) => {
          weights.data = wrongType(r, weights.data.length);
          return reject('TypeError', ['opts.weights.data']);
        },
      ],
      [
        'weights-wrong-length',
        (r) => {
          weights.data = weights.data.subarray(0, weights.data.length - r.int(1, Math.min(d, weights.data.length)));
          if (weights.data.length === 0) weights.data = new Float32Array(d * (weights.rows + 1));
          return reject('RangeError', ['opts.weights']);
        },
      ],
      [
        'weights-non-finite',
        (r) => {
          poke(r, weights.data, false);
          return reject('RangeError', ['opts.weights.data'], ['weights']);
        },
      ],
      [
        'weights-huge',
        (r) => {
          poke(r, weights.data, true);
          return finiteOrReject(['opts.weights.data'], ['weights']);
        },
      ],
      [
        'weights-resizable',
        (r) => {
          weights.data = resizableCopy(r, weights.data);
          return reject('TypeError', ['opts.weights.data']);
        },
      ],
    );
  }
  return list;
}

function patchMutations(call) {
  const [weights, edit] = call.args;
  const d = edit.d;
  return [
    ...transformMutations(edit, 'edit', (v) => (call.args[1] = v)),
    [
      'weights-wrong-type',
      (r) => {
        call.args[0] = r.pick([null, 5, 'x', weights.data]);
        return reject('TypeError', ['weights']);
      },
    ],
    [
      'weights-data-wrong-type',
      (r) => {
        weights.data = wrongType(r, weights.data.length);
        return reject('TypeError', ['weights.data']);
      },
    ],
    [
      'weights-wrong-length',
      () => {
        weights.data = weights.data.length > 1 ? weights.data.subarray(0, weights.data.length - 1) : new Float32Array(d + 1);
        return reject('RangeError', ['weights']);
      },
    ],
    [
      'weights-rows-invalid',
      (r) => {
        const bad = r.pick([0, -1, 1.5, '2']);
        weights.rows = bad;
        return reject(typeof bad === 'string' ? 'TypeError' : 'RangeError', ['weights.rows']);
      },
    ],
    [
      'weights-non-finite',
      (r) => {
        poke(r, weights.data, false);
        return reject('RangeError', ['weights.data'], ['weights', 'rows']);
      },
    ],
    [
      'weights-huge',
      (r) => {
        poke(r, weights.data, true);
        return finiteOrReject(['weights.data'], ['weights', 'rows']);
      },
    ],
    [
      'weights-resizable',
      (r) => {
        weights.data = resizableCopy(r, weights.data);
        return reject('TypeError', ['weights.data']);
      },
    ],
    ...outputOptionMutations(call, weights.data.length, () => weights.data),
  ];
}

function applyMutations(call) {
  const [embeddings, edit] = call.args;
  const d = edit.d;
  return [
    ...transformMutations(edit, 'edit', (v) => (call.args[1] = v)),
    [
      'embeddings-wrong-type',
      (r) => {
        call.args[0] = wrongType(r, embeddings.length);
        return reject('TypeError', ['embeddings']);
      },
    ],
    [
      'embeddings-not-whole-rows',
      (r) => {
        if (d < 2) return null;
        call.args[0] = embeddings.subarray(0, embeddings.length - r.int(1, d - 1));
        if (call.args[2]?.out) call.args[2].out = undefined;
        call.outs.length = 0;
        return reject('RangeError', ['embeddings']);
      },
    ],
    [
      'embeddings-empty',
      () => {
        call.args[0] = new Float32Array(0);
        if (call.args[2]?.out) call.args[2].out = undefined;
        call.outs.length = 0;
        return reject('RangeError', ['embeddings']);
      },
    ],
    [
      'embeddings-non-finite',
      (r) => {
        poke(r, embeddings, false);
        return reject('RangeError', ['embeddings'], ['rows']);
      },
    ],
    [
      'embeddings-huge',
      (r) => {
        poke(r, embeddings, true);
        return finiteOrReject(['embeddings'], ['rows']);
      },
    ],
    [
      'embeddings-resizable',
      (r) => {
        call.args[0] = resizableCopy(r, embeddings);
        return reject('TypeError', ['embeddings']);
      },
    ],
    ...outputOptionMutations(call, embeddings.length, () => embeddings),
  ];
}

function composeMutations(call) {
  const [a, b] = call.args;
  return [
    ...transformMutations(a, 'a', (v) => (call.args[0] = v)),
    ...transformMutations(b, 'b', (v) => (call.args[1] = v)),
    [
      'widths-differ',
      (r) => {
        const d = a.d === 1 ? 2 : a.d + r.pick([-1, 1]);
        call.args[1] = makeTransform(r, d);
        return reject('RangeError', ['b.d'], ['a.d']);
      },
    ],
  ];
}

function denseOfMutations(call) {
  const [edit] = call.args;
  return [
    ...transformMutations(edit, 'edit', (v) => (call.args[0] = v)),
    [
      'backend-unknown',
      (r) => {
        call.args[1] = r.pick(['gpu', 'CPU', 'tpu', '']);
        return reject('RangeError', ['backend']);
      },
    ],
    [
      'backend-cuda',
      () => {
        call.args[1] = 'cuda';
        return { ...reject('Error', []), pattern: 'cuda|CPU' };
      },
    ],
    [
      'backend-wrong-type',
      (r) => {
        call.args[1] = r.pick([5, {}, true]);
        return reject('TypeError', ['backend']);
      },
    ],
  ];
}

const MUTATIONS = {
  solveEdits: solveMutations,
  patchWeights: patchMutations,
  applyToEmbeddings: applyMutations,
  composeTransforms: composeMutations,
  denseOf: denseOfMutations,
  availableBackends: () => [],
};

/**
 * The mutations that apply to `call`'s function, as [name, mutate(r) → expectation | null] pairs; each closes
 * over `call` and changes its arguments in place.
 *
 * @example
 *   const [name, mutate] = mutationsOf(call)[0];   // 'transform-wrong-type'
 *   call.expect = mutate(r);                        // { outcome: 'reject', errorClass: 'TypeError', names: ['edit'], … }
 */
export function mutationsOf(call) {
  return MUTATIONS[call.fn](call);
}

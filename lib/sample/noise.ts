// Seeded Gaussian noise that depends only on (seed, element index): Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC'11; checked against Random123's known-answer vectors in the tests) with
// key = (seed mod 2^32, floor(seed / 2^32)) and counter = (j, 0, 0, 0) for block j, then Box-Muller.
// Block j yields elements 4j … 4j+3: with the four 32-bit outputs x0…x3 and u_i = (x_i + 0.5) / 2^32,
//   r = √(−2 ln u0), e[4j] = r cos(2π u1), e[4j+1] = r sin(2π u1), and likewise (u2, u3) for 4j+2, 4j+3,
// computed in float64 and rounded to float32. The same seed gives the same bytes on every platform V8 runs on
// (V8's Math.log/cos/sin are its own fdlibm port), independent of batch size or position in the batch.

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO32 = 4294967296;

/** High and low 32 bits of a 32×32-bit product, exactly (every intermediate stays below 2^53). */
function mulhilo(a: number, b: number, out: Uint32Array, hiAt: number, loAt: number): void {
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const p1 = a * bl;
  const p2 = a * bh;
  const p2hi = Math.floor(p2 / 65536);
  const rest = (p2 % 65536) * 65536 + p1;
  out[hiAt] = p2hi + Math.floor(rest / TWO32);
  out[loAt] = rest % TWO32;
}

/** Philox4x32-10 of a 4-word counter under a 2-word key. */
export function philox4x32(counter: ArrayLike<number>, key: ArrayLike<number>): Uint32Array {
  const c = Uint32Array.from(counter);
  let k0 = key[0]! >>> 0;
  let k1 = key[1]! >>> 0;
  const p = new Uint32Array(4);
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    mulhilo(M0, c[0]!, p, 0, 1); // p0 = hi0, p1 = lo0
    mulhilo(M1, c[2]!, p, 2, 3); // p2 = hi1, p3 = lo1
    const n0 = (p[2]! ^ c[1]! ^ k0) >>> 0;
    const n1 = p[3]!;
    const n2 = (p[0]! ^ c[3]! ^ k1) >>> 0;
    const n3 = p[1]!;
    c[0] = n0;
    c[1] = n1;
    c[2] = n2;
    c[3] = n3;
  }
  return c;
}

/** Throws unless seed is an integer in [0, 2^53). */
export function checkSeed(seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be an integer in [0, 2^53), got ${seed}`);
}

/** `count` standard normal float32 values for `seed` (see the header for the exact definition). */
export function gaussianNoise(seed: number, count: number): Float32Array {
  checkSeed(seed);
  const key = [seed % TWO32, Math.floor(seed / TWO32)];
  const out = new Float32Array(count);
  const ctr = [0, 0, 0, 0];
  for (let j = 0; 4 * j < count; j++) {
    ctr[0] = j;
    const x = philox4x32(ctr, key);
    for (let pair = 0; pair < 2; pair++) {
      const u0 = (x[2 * pair]! + 0.5) / TWO32;
      const u1 = (x[2 * pair + 1]! + 0.5) / TWO32;
      const r = Math.sqrt(-2 * Math.log(u0));
      const i = 4 * j + 2 * pair;
      if (i < count) out[i] = r * Math.cos(2 * Math.PI * u1);
      if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * u1);
    }
  }
  return out;
}

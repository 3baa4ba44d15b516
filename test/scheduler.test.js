// Schedulers against values computed here in float64 from diffusers' formulas (diffusers src/diffusers/schedulers/scheduling_*.py), published numbers
// (ᾱ₀, ᾱ₉₉₉, the WebNN demo's Euler 25-step sigmas) and a property every sampler must have: when the data is a
// single point x0 and the "UNet" predicts the exact noise, sampling ends at x0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alphasCumprod, createScheduler, parseSchedulerName } from '../lib/sample/schedulers.js';

// SD 1.x scheduler/scheduler_config.json
const SD = {
  _class_name: 'PNDMScheduler',
  num_train_timesteps: 1000,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  beta_end: 0.012,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  clip_sample: false,
};

function refAlphas() {
  const out = [];
  let p = 1;
  for (let i = 0; i < 1000; i++) {
    const b = (Math.sqrt(0.00085) + (Math.sqrt(0.012) - Math.sqrt(0.00085)) * (i / 999)) ** 2;
    p *= 1 - b;
    out.push(p);
  }
  return out;
}
const AC = refAlphas();
const sigma = (t) => Math.sqrt((1 - AC[t]) / AC[t]);

function close(a, b, tol, msg) {
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${msg}: ${a} vs ${b}`);
}

test('alphas cumprod', () => {
  const ac = alphasCumprod(SD);
  assert.equal(ac.length, 1000);
  for (let t = 0; t < 1000; t++) close(ac[t], AC[t], 1e-12, `ᾱ[${t}]`);
  close(ac[0], 0.99915, 1e-6, 'ᾱ0');
  close(ac[999], 0.0046601, 1e-4, 'ᾱ999');
  const lin = alphasCumprod({ num_train_timesteps: 10, beta_schedule: 'linear', beta_start: 0.1, beta_end: 0.2 });
  close(lin[1], 0.9 * (1 - (0.1 + 0.1 / 9)), 1e-12, 'linear ᾱ1');
});

test('PNDM: 50 steps make 51 UNet calls with 961 repeated', () => {
  const s = createScheduler(SD, 50);
  assert.equal(s.name, 'pndm');
  assert.equal(s.timesteps.length, 51);
  const want = [981, 961, 961];
  for (let t = 941; t >= 1; t -= 20) want.push(t);
  assert.deepEqual([...s.timesteps], want);
  assert.equal(s.initNoiseSigma, 1);
  const s10 = createScheduler(SD, 10);
  assert.deepEqual([...s10.timesteps], [901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
});

// diffusers PNDMScheduler.step_plms for scalar latents, written as a sequence of explicit cases.
function refPndm(steps, x0, epsFn) {
  const r = Math.floor(1000 / steps);
  const ts = createScheduler(SD, steps).timesteps; // checked separately above
  let x = x0;
  const ets = [];
  let cur = null;
  const out = [];
  ts.forEach((t0, counter) => {
    const eps = epsFn(x, t0);
    let t = t0;
    let prev = t - r;
    if (counter !== 1) {
      ets.push(eps);
      if (ets.length > 4) ets.shift();
    } else {
      prev = t;
      t = t + r;
    }
    let e;
    let base = x;
    const n = ets.length;
    if (n === 1 && counter === 0) {
      e = eps;
      cur = x;
    } else if (n === 1 && counter === 1) {
      e = (eps + ets[0]) / 2;
      base = cur;
    } else if (n === 2) e = (3 * ets[1] - ets[0]) / 2;
    else if (n === 3) e = (23 * ets[2] - 16 * ets[1] + 5 * ets[0]) / 12;
    else e = (55 * ets[3] - 59 * ets[2] + 37 * ets[1] - 9 * ets[0]) / 24;
    const at = AC[t];
    const ap = prev >= 0 ? AC[prev] : AC[0];
    x = Math.sqrt(ap / at) * base - ((ap - at) * e) / (at * Math.sqrt(1 - ap) + Math.sqrt(at * (1 - at) * ap));
    out.push(x);
  });
  return out;
}

test('PNDM: every step of a 50-step run equals the reference', () => {
  const epsFn = (x, t) => Math.sin(x * 0.7 + t * 0.01) * 0.9;
  const want = refPndm(50, 1.3, epsFn);
  const s = createScheduler(SD, 50);
  let x = new Float32Array([1.3]);
  let xr = 1.3;
  s.timesteps.forEach((t, i) => {
    // Feed the reference's own state into the eps function so float32 rounding cannot compound.
    const eps = new Float32Array([epsFn(xr, t)]);
    x = s.step(eps, i, x);
    close(x[0], want[i], 2e-5, `call ${i} (t=${t})`);
    xr = want[i];
    x = new Float32Array([xr]);
  });
});

test('DDIM: timesteps and one step', () => {
  const s = createScheduler(SD, 50, 'ddim');
  const want = [];
  for (let t = 981; t >= 1; t -= 20) want.push(t);
  assert.deepEqual([...s.timesteps], want);
  const x = new Float32Array([0.5, -1.25, 2]);
  const eps = new Float32Array([0.125, -0.375, 0.75]);
  const out = s.step(eps, 0, x);
  const at = AC[981];
  const ap = AC[961];
  for (let k = 0; k < 3; k++) {
    const x0 = (x[k] - Math.sqrt(1 - at) * eps[k]) / Math.sqrt(at);
    close(out[k], Math.sqrt(ap) * x0 + Math.sqrt(1 - ap) * eps[k], 1e-6, `ddim ${k}`);
  }
  // Last step goes to ᾱ0 (set_alpha_to_one false).
  const last = s.step(eps, 49, x);
  const a1 = AC[1];
  const x00 = (x[0] - Math.sqrt(1 - a1) * eps[0]) / Math.sqrt(a1);
  close(last[0], Math.sqrt(AC[0]) * x00 + Math.sqrt(1 - AC[0]) * eps[0], 1e-6, 'ddim last');
});

test('Euler: sigmas, initial sigma, input scaling and one step', () => {
  const s = createScheduler(SD, 25, 'euler');
  assert.equal(s.timesteps.length, 25);
  close(s.timesteps[0], 999, 1e-12, 't0');
  close(s.timesteps[1], 957.375, 1e-9, 't1');
  // microsoft/webnn-developer-preview's hard-coded 25-step sigmas (computed by diffusers in float32).
  close(s.sigmas[0], 14.614647, 2e-6, 'σ0');
  close(s.sigmas[1], 11.435942, 2e-6, 'σ1');
  close(s.sigmas[24], 0.02916753, 1e-5, 'σ24');
  assert.equal(s.sigmas[25], 0);
  close(s.initNoiseSigma, 14.614647, 2e-6, 'init σ');
  // σ at fractional t interpolates linearly between integer timesteps.
  const t = s.timesteps[1];
  const f = t - Math.floor(t);
  close(s.sigmas[1], sigma(957) * (1 - f) + sigma(958) * f, 1e-12, 'interp');
  const x = new Float32Array([3, -7]);
  const scaled = s.scaleModelInput(x, 1);
  close(scaled[0], 3 / Math.sqrt(s.sigmas[1] ** 2 + 1), 1e-6, 'scale');
  const eps = new Float32Array([0.5, -0.25]);
  s.step(eps, 0, x);
  const out = s.step(eps, 1, x);
  close(out[1], -7 + -0.25 * (s.sigmas[2] - s.sigmas[1]), 1e-6, 'euler step');
});

test('DPM-Solver++ 2M: timesteps, first- and second-order steps, last step lands on x0', () => {
  const s = createScheduler(SD, 20, 'dpm++2m');
  const want = [];
  for (let i = 20; i >= 1; i--) want.push(Math.round((999 * i) / 20));
  // 999·10/20 = 499.5 rounds half to even (500) as numpy does; no other .5 occurs at N = 20.
  assert.deepEqual([...s.timesteps], want);
  assert.equal(s.timesteps[10], 500);
  const sig = (i) => (i === 20 ? 0 : sigma(want[i]));
  const alpha = (sg) => 1 / Math.sqrt(sg * sg + 1);
  const lam = (sg) => Math.log(alpha(sg)) - Math.log(sg * alpha(sg));
  const x = new Float32Array([1.5, -0.5]);
  const e0 = new Float32Array([0.3, 0.2]);
  const e1 = new Float32Array([-0.1, 0.4]);
  const x1 = s.step(e0, 0, x);
  const m = (xv, ev, sg) => (xv - sg * alpha(sg) * ev) / alpha(sg);
  for (let k = 0; k < 2; k++) {
    const s0 = sig(0);
    const s1 = sig(1);
    const h = lam(s1) - lam(s0);
    const wantK = ((s1 * alpha(s1)) / (s0 * alpha(s0))) * x[k] - alpha(s1) * (Math.exp(-h) - 1) * m(x[k], e0[k], s0);
    close(x1[k], wantK, 1e-6, `dpm first ${k}`);
  }
  const x2 = s.step(e1, 1, x1);
  for (let k = 0; k < 2; k++) {
    const [sp, sc, sn] = [sig(0), sig(1), sig(2)];
    const h = lam(sn) - lam(sc);
    const r0 = (lam(sc) - lam(sp)) / h;
    const m0 = m(x1[k], e1[k], sc);
    const m1 = m(x[k], e0[k], sp);
    const d1 = (m0 - m1) / r0;
    const an = alpha(sn);
    const wantK = ((sn * an) / (sc * alpha(sc))) * x1[k] - an * (Math.exp(-h) - 1) * m0 - 0.5 * an * (Math.exp(-h) - 1) * d1;
    close(x2[k], wantK, 1e-6, `dpm second ${k}`);
  }
});

// A single data point x0: the exact noise prediction at (x_in, t) is (x_in − √ᾱ_t x0)/√(1−ᾱ_t).
function sampleToPoint(name, steps, x0, noise) {
  const s = createScheduler(SD, steps, name);
  const ac = alphasCumprod(SD);
  const interp = (t) => {
    const lo = Math.floor(t);
    const f = t - lo;
    return f === 0 ? ac[lo] : null;
  };
  let x = new Float32Array(x0.map((_, k) => noise[k] * s.initNoiseSigma));
  let calls = 0;
  s.timesteps.forEach((t, i) => {
    const xin = s.scaleModelInput(x, i);
    let a = interp(t);
    if (a === null) {
      // Euler's fractional t: use the ᾱ implied by its σ, as a perfect σ-conditioned model would.
      const sg = s.sigmas[i];
      a = 1 / (sg * sg + 1);
    }
    const eps = new Float32Array(x0.map((v, k) => (xin[k] - Math.sqrt(a) * v) / Math.sqrt(1 - a)));
    x = s.step(eps, i, x);
    calls++;
  });
  return { x, calls };
}

test('every scheduler denoises a single data point back to it', () => {
  const x0 = [0.8, -0.6, 0.1];
  const noise = [1.1, -0.4, 0.9];
  // PNDM and DDIM stop at t = 0 with ᾱ0 = 0.99915 (set_alpha_to_one false), so √(1−ᾱ0)·noise ≈ 0.03 remains;
  // DDIM on a point mass keeps the implied noise direction (x_T − √ᾱ_T x0)/√(1−ᾱ_T) exactly, so its end is known.
  const nT = x0.map((v, k) => (noise[k] - Math.sqrt(AC[981]) * v) / Math.sqrt(1 - AC[981]));
  const ddimEnd = x0.map((v, k) => Math.sqrt(AC[0]) * v + Math.sqrt(1 - AC[0]) * nT[k]);
  for (const [name, steps, tol, calls, want] of [
    ['pndm', 50, 0.05, 51, x0],
    ['ddim', 50, 1e-4, 50, ddimEnd],
    ['euler', 30, 1e-4, 30, x0],
    ['dpm++2m', 20, 1e-4, 20, x0],
  ]) {
    const r = sampleToPoint(name, steps, x0, noise);
    assert.equal(r.calls, calls, `${name} UNet calls`);
    want.forEach((v, k) => assert.ok(Math.abs(r.x[k] - v) < tol, `${name}: x[${k}] = ${r.x[k]}, want ${v}`));
  }
});

test('scheduler names and bad parameters', () => {
  assert.equal(parseSchedulerName('PNDMScheduler'), 'pndm');
  assert.equal(parseSchedulerName('EulerDiscreteScheduler'), 'euler');
  assert.equal(parseSchedulerName('DPMSolverMultistepScheduler'), 'dpm++2m');
  assert.equal(parseSchedulerName('ddim'), 'ddim');
  assert.throws(() => parseSchedulerName('lms'), /unknown scheduler 'lms'/);
  assert.throws(() => createScheduler(SD, 0), /steps must be a positive integer/);
  assert.throws(() => createScheduler(SD, -3), /steps must be a positive integer/);
  assert.throws(() => createScheduler(SD, 2.5), /steps must be a positive integer/);
  assert.throws(() => createScheduler({ ...SD, prediction_type: 'v_prediction' }, 10), /prediction_type/);
  assert.throws(() => createScheduler({ ...SD, beta_schedule: 'squaredcos_cap_v2' }, 10), /beta_schedule/);
});

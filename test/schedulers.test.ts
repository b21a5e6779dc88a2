// Schedulers vs diffusers: every golden `scheduler` case of ../shared/golden/cases.json run as a
// full denoising loop, plus config handling and error messages.
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { maxAbsRelToMax, openGolden } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import {
  createScheduler,
  parseSchedulerConfigJson,
  parsePythonJson,
  schedulerFromConfig,
  SchedulerConfigError,
  type Scheduler,
} from "../src/pipeline/schedulers.ts";

const golden = await openGolden(path.join(sharedDir(), "golden"), "cases");
const cases: any[] = golden.json.cases.filter((c: any) => c.kind === "scheduler");

/** Golden case names: "dpmsolver++" and "ddim-v" (DDIM with v-prediction) map onto ours. */
const schedulerName = (c: any) => (c.scheduler === "ddim-v" ? "ddim" : c.scheduler);

/** Runs the loop the case describes; returns all samples after each step, concatenated. */
function runCase(s: Scheduler, c: any): Float32Array {
  const x0 = golden.get(c.inputs.initial).data;
  const base = golden.get(c.inputs.model_output_base);
  const n = x0.length;
  expect(base.shape[0]).toBe(s.timesteps.length);
  const out = new Float32Array(n * s.timesteps.length);
  let sample = x0;
  s.timesteps.forEach((t, i) => {
    // model_output[i] = model_output_base[i] + 0.01 * scale_model_input(sample_i, t_i)
    const scaled = s.scaleModelInput(sample, t);
    const mo = base.data.slice(i * n, (i + 1) * n).map((b, j) => b + 0.01 * scaled[j]);
    sample = s.step(mo, t, sample);
    out.set(sample, i * n);
  });
  return out;
}

describe("schedulers vs diffusers golden cases", () => {
  it("has the 9 scheduler cases", () => expect(cases.length).toBe(9));

  for (const c of cases) {
    const label = `${c.scheduler} ${c.config.prediction_type} ${c.config.timestep_spacing} ${c.num_inference_steps} steps`;
    it(label, () => {
      const s = createScheduler(schedulerName(c), c.config);
      s.setTimesteps(c.num_inference_steps);
      if (c.scheduler === "euler") {
        // Euler's linspace timesteps are fractional floats (passed to the UNet as such); the golden
        // file lists them cast to int.
        expect(s.timesteps.map(Math.trunc)).toEqual(c.timesteps);
        expect(s.timesteps.some((t) => !Number.isInteger(t))).toBe(true);
      } else {
        expect(s.timesteps).toEqual(c.timesteps);
      }
      expect(s.initNoiseSigma).toBe(c.init_noise_sigma);

      const expected = golden.get(c.expected.samples).data;
      const actual = runCase(s, c);
      const n = expected.length / s.timesteps.length;
      const tol = c.tolerance.max_abs_rel_to_max;
      for (let i = 0; i < s.timesteps.length; i++) {
        const err = maxAbsRelToMax(actual.subarray(i * n, (i + 1) * n), expected.subarray(i * n, (i + 1) * n));
        expect(err, `step ${i} (t=${s.timesteps[i]})`).toBeLessThanOrEqual(tol);
      }

      // setTimesteps resets all per-run state: a second run gives the same result.
      s.setTimesteps(c.num_inference_steps);
      expect(runCase(s, c)).toEqual(actual);
    });
  }
});

describe("scheduler configs", () => {
  const modelConfigPath = path.join(sharedDir(), "models", "fashion-sd-tiny", "scheduler", "scheduler_config.json");
  const sd15 = parseSchedulerConfigJson(fs.readFileSync(modelConfigPath, "utf8"));

  it("schedulerFromConfig picks the class named in the config", async () => {
    const s = schedulerFromConfig(sd15);
    expect(s.className).toBe("PNDMScheduler");
    s.setTimesteps(20);
    const pndmCase = cases.find((c) => c.scheduler === "pndm" && c.num_inference_steps === 20);
    expect(s.timesteps).toEqual(pndmCase.timesteps);
    for (const [cls, name] of [["DDIMScheduler", "ddim"], ["EulerDiscreteScheduler", "euler"], ["DPMSolverMultistepScheduler", "dpm++"]]) {
      expect(schedulerFromConfig({ ...sd15, _class_name: cls }).name).toBe(name);
    }
  });

  it("overriding the model's scheduler keeps its beta schedule and spacing (diffusers from_config)", async () => {
    const pndm = createScheduler("pndm", sd15);
    for (const name of ["ddim", "euler", "dpm++", "dpmsolver++"]) {
      const s = createScheduler(name, sd15);
      expect(Array.from(s.alphasCumprod)).toEqual(Array.from(pndm.alphasCumprod));
    }
    // Euler with the model's "leading" spacing: integer timesteps and sqrt(sigma_max^2 + 1).
    const euler = createScheduler("euler", sd15);
    euler.setTimesteps(20);
    expect(euler.timesteps[0]).toBe(951);
    expect(euler.timesteps.at(-1)).toBe(1);
    expect(euler.initNoiseSigma).toBeGreaterThan(1);
    const sigmaMax = Math.sqrt((1 - pndm.alphasCumprod[951]) / pndm.alphasCumprod[951]);
    expect(euler.initNoiseSigma).toBeCloseTo(Math.sqrt(sigmaMax ** 2 + 1), 5);
    // DPM-Solver with "leading": (arange(21) * (1000 // 21))[::-1][:-1] + steps_offset.
    const dpm = createScheduler("dpm++", sd15);
    dpm.setTimesteps(20);
    expect(dpm.timesteps.slice(0, 3)).toEqual([941, 894, 847]);
    expect(dpm.timesteps.at(-1)).toBe(48);
  });

  it("parses Python-style JSON (Infinity, NaN) but leaves strings alone", async () => {
    const v = parsePythonJson('{"a": -Infinity, "b": [Infinity, NaN], "c": "NaN -Infinity \\" Infinity"}') as any;
    expect(v.a).toBe(-Infinity);
    expect(v.b[0]).toBe(Infinity);
    expect(Number.isNaN(v.b[1])).toBe(true);
    expect(v.c).toBe('NaN -Infinity " Infinity');
  });

  it("trailing and linspace spacings match numpy's rounding", async () => {
    const base = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 };
    const ddim = createScheduler("ddim", { ...base, timestep_spacing: "trailing" });
    ddim.setTimesteps(30); // np.round(np.arange(1000, 0, -33.33)) - 1
    expect(ddim.timesteps.slice(0, 4)).toEqual([999, 966, 932, 899]);
    expect(ddim.timesteps.at(-1)).toBe(32);
    const pndm = createScheduler("pndm", { ...base, skip_prk_steps: true, timestep_spacing: "linspace" });
    pndm.setTimesteps(4); // linspace(0, 999, 4).round() = 0, 333, 666, 999
    expect(pndm.timesteps).toEqual([999, 666, 666, 333, 0]);
  });

  it("PNDM without skip_prk_steps runs the 12 Runge-Kutta warm-up steps first", async () => {
    const s = createScheduler("pndm", { skip_prk_steps: false, steps_offset: 1 });
    s.setTimesteps(50);
    expect(s.timesteps.slice(0, 12)).toEqual([981, 971, 971, 961, 961, 951, 951, 941, 941, 931, 931, 921]);
    expect(s.timesteps.slice(12, 14)).toEqual([921, 901]);
    expect(s.timesteps.length).toBe(12 + 47);
    // A smooth run stays finite and shrinks toward the model's x0.
    let x: Float32Array = new Float32Array(16).fill(1);
    for (const t of s.timesteps) x = s.step(new Float32Array(16).fill(0.5), t, x);
    expect(x.every(Number.isFinite)).toBe(true);
  });

  it("DDIM clips x0 by default (diffusers' clip_sample=True) and not when clip_sample is false", async () => {
    const clipped = createScheduler("ddim", {});
    const free = createScheduler("ddim", { clip_sample: false });
    clipped.setTimesteps(10);
    free.setTimesteps(10);
    const t = clipped.timesteps[0];
    const sample = new Float32Array([50, -50, 0.001]);
    const eps = new Float32Array([0, 0, 0]);
    const a = clipped.step(eps, t, sample);
    const b = free.step(eps, t, sample);
    expect(Math.abs(a[0])).toBeLessThan(1.01);
    expect(Math.abs(b[0])).toBeGreaterThan(10);
    expect(a[2]).toBeCloseTo(b[2], 6);
  });

  it("rescale_betas_zero_snr gives zero terminal SNR (Euler/DPM keep it at 2^-24)", async () => {
    const cfg = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, rescale_betas_zero_snr: true };
    const plain = createScheduler("ddim", { ...cfg, rescale_betas_zero_snr: false }).alphasCumprod;
    const ddim = createScheduler("ddim", cfg).alphasCumprod;
    expect(ddim[0]).toBeCloseTo(plain[0], 6);
    expect(ddim[999]).toBe(0);
    expect(createScheduler("euler", cfg).alphasCumprod[999]).toBe(2 ** -24);
    expect(createScheduler("dpm++", cfg).alphasCumprod[999]).toBe(2 ** -24);
    // PNDMScheduler has no such option in diffusers: the key is ignored.
    expect(createScheduler("pndm", cfg).alphasCumprod[999]).toBe(plain[999]);
  });

  it("squaredcos_cap_v2, linear and trained_betas build valid schedules", async () => {
    for (const cfg of [
      { beta_schedule: "squaredcos_cap_v2" },
      { beta_schedule: "linear" },
      { trained_betas: Array.from({ length: 1000 }, (_, i) => 0.0001 + (0.02 - 0.0001) * i / 999) },
    ]) {
      const s = createScheduler("dpm++", cfg);
      s.setTimesteps(10);
      const a = s.alphasCumprod;
      expect(a.length).toBe(1000);
      for (let i = 1; i < a.length; i++) expect(a[i]).toBeLessThan(a[i - 1]);
    }
    const lin = createScheduler("ddim", { beta_schedule: "linear" }).alphasCumprod;
    const trained = createScheduler("ddim", {
      trained_betas: Array.from({ length: 1000 }, (_, i) => 0.0001 + (0.02 - 0.0001) * i / 999),
    }).alphasCumprod;
    expect(maxAbsRelToMax(trained, lin)).toBeLessThan(1e-6);
  });
});

describe("scheduler consistency (paths the golden cases do not cover)", () => {
  const sd = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, steps_offset: 1, set_alpha_to_one: true, clip_sample: false };
  const N = 64;
  const z = Float32Array.from({ length: N }, (_, j) => Math.sin(3.1 * j + 0.7) * 1.3);
  const x0 = Float32Array.from({ length: N }, (_, j) => Math.cos(1.7 * j) * 0.8);

  function run(s: Scheduler, init: Float32Array, model: (scaled: Float32Array, i: number) => Float32Array): Float32Array {
    let x = init;
    s.timesteps.forEach((t, i) => {
      x = s.step(model(s.scaleModelInput(x, t), i), t, x);
    });
    return x;
  }

  // Euler and first-order DPM-Solver++ are DDIM (eta 0) in other coordinates: on the same
  // timesteps, with the model seeing the same scaled input, they must end at the same sample.
  for (const prediction_type of ["epsilon", "v_prediction", "sample"]) {
    it(`DDIM == Euler == DPM-Solver++ order 1 (${prediction_type}, trailing)`, async () => {
      const cfg = { ...sd, prediction_type, timestep_spacing: "trailing" };
      const model = (x: Float32Array, i: number) => x.map((v, j) => 0.5 * v + 0.1 * Math.sin(j + i));
      const ddim = createScheduler("ddim", cfg);
      const euler = createScheduler("euler", cfg);
      const dpm = createScheduler("dpm++", { ...cfg, solver_order: 1 });
      for (const s of [ddim, euler, dpm]) s.setTimesteps(10);
      expect(euler.timesteps).toEqual(ddim.timesteps);
      expect(dpm.timesteps).toEqual(ddim.timesteps);
      const ref = run(ddim, z, model);
      expect(maxAbsRelToMax(run(dpm, z, model), ref)).toBeLessThan(1e-5);
      const a = ddim.alphasCumprod[ddim.timesteps[0]];
      expect(euler.initNoiseSigma).toBeCloseTo(Math.sqrt((1 - a) / a), 4);
      expect(maxAbsRelToMax(run(euler, z.map((v) => v / Math.sqrt(a)), model), ref)).toBeLessThan(1e-5);
    });
  }

  // With a model whose noise estimate is exact (a constant eps along the exact trajectory), every
  // solver must land on x0: this exercises PRK warm-up, PLMS orders and DPM orders 2 and 3.
  const variants: [string, Record<string, unknown>][] = [
    ["pndm", { skip_prk_steps: true }],
    ["pndm", { skip_prk_steps: false }],
    ["ddim", {}],
    ["euler", {}],
    ["euler", { timestep_spacing: "leading" }],
    ["dpm++", { solver_order: 2 }],
    ["dpm++", { solver_order: 3 }],
    ["dpm++", { solver_order: 2, solver_type: "heun" }],
    ["dpm++", { solver_order: 3, final_sigmas_type: "sigma_min", lower_order_final: false }],
  ];
  for (const [name, extra] of variants) {
    it(`${name} ${JSON.stringify(extra)} recovers x0 from an exact noise estimate`, async () => {
      const s = createScheduler(name, { ...sd, ...extra });
      s.setTimesteps(25);
      const eps = z;
      // x_T = sqrt(a) x0 + sqrt(1-a) eps, times the scheduler's own input scaling for Euler.
      const t0 = s.timesteps[0];
      const a = s.alphasCumprod[Math.round(t0)];
      let init = x0.map((v, j) => Math.sqrt(a) * v + Math.sqrt(1 - a) * eps[j]);
      if (name === "euler") init = init.map((v) => v / Math.sqrt(a));
      const out = run(s, init, () => eps);
      if ((extra as any).final_sigmas_type === "sigma_min") {
        // Ends at the smallest training sigma, not at 0.
        const a0 = s.alphasCumprod[0];
        const want = x0.map((v, j) => Math.sqrt(a0) * v + Math.sqrt(1 - a0) * eps[j]);
        expect(maxAbsRelToMax(out, want)).toBeLessThan(1e-5);
      } else {
        expect(maxAbsRelToMax(out, x0)).toBeLessThan(1e-5);
      }
    });
  }
});

describe("scheduler errors", () => {
  const base = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 };
  const err = (f: () => unknown, re: RegExp) => expect(f).toThrow(re);

  it("unknown scheduler names list the valid ones", async () => {
    err(() => createScheduler("lms", base), /unknown scheduler "lms"; valid names: pndm, ddim, euler, dpm\+\+/);
    expect(() => createScheduler("lms", base)).toThrow(SchedulerConfigError);
  });

  it("unsupported _class_name names the class and the supported ones", async () => {
    err(() => schedulerFromConfig({ ...base, _class_name: "LMSDiscreteScheduler" }), /_class_name "LMSDiscreteScheduler" is not supported.*PNDMScheduler/);
    err(() => schedulerFromConfig(base), /_class_name undefined is not supported/);
  });

  it("unsupported config values name the field and value", async () => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ["pndm", { beta_schedule: "foo" }, /scheduler_config\.json: beta_schedule "foo" is not supported/],
      ["ddim", { ...base, timestep_spacing: "even" }, /timestep_spacing "even" is not supported/],
      ["ddim", { ...base, prediction_type: "flow" }, /prediction_type "flow" is not supported/],
      ["pndm", { ...base, prediction_type: "sample" }, /prediction_type "sample" is not supported/],
      ["ddim", { ...base, thresholding: true }, /thresholding true is not supported/],
      ["euler", { ...base, use_karras_sigmas: true }, /use_karras_sigmas true is not supported/],
      ["euler", { ...base, interpolation_type: "log_linear" }, /interpolation_type "log_linear" is not supported/],
      ["euler", { ...base, final_sigmas_type: "max" }, /final_sigmas_type "max" is not supported/],
      ["dpm++", { ...base, algorithm_type: "sde-dpmsolver++" }, /algorithm_type "sde-dpmsolver\+\+" is not supported/],
      ["dpm++", { ...base, solver_order: 4 }, /solver_order 4 is not supported/],
      ["dpm++", { ...base, use_karras_sigmas: true }, /use_karras_sigmas true is not supported/],
      ["dpm++", { ...base, variance_type: "learned_range" }, /variance_type "learned_range" is not supported/],
      ["dpm++", { ...base, thresholding: true }, /thresholding true is not supported/],
      ["ddim", { ...base, steps_offset: "1" }, /steps_offset "1" is not a number/],
      ["ddim", { ...base, steps_offset: 0.5 }, /steps_offset 0.5 must be an integer/],
      ["ddim", { ...base, clip_sample: "no" }, /clip_sample "no" must be true or false/],
      ["ddim", { trained_betas: [0.1, 0.2] }, /trained_betas \[array of 2\] has 2 values but num_train_timesteps is 1000/],
    ];
    for (const [name, cfg, re] of cases) err(() => createScheduler(name, cfg), re);
  });

  it("ignores keys that belong to other schedulers, as diffusers' from_config does", async () => {
    expect(() => createScheduler("euler", { ...base, skip_prk_steps: true, set_alpha_to_one: false, clip_sample: true })).not.toThrow();
  });

  it("step misuse is reported", async () => {
    const s = createScheduler("ddim", base);
    err(() => s.step(new Float32Array(4), 1, new Float32Array(4)), /call setTimesteps first/);
    s.setTimesteps(10);
    err(() => s.step(new Float32Array(4), s.timesteps[0], new Float32Array(3)), /model output has 4 values but the sample has 3/);
    err(() => s.setTimesteps(0), /num_inference_steps must be an integer >= 1/);
    err(() => s.setTimesteps(2000), /exceeds num_train_timesteps 1000/);
    const e = createScheduler("euler", base);
    e.setTimesteps(10);
    err(() => e.scaleModelInput(new Float32Array(4), 12.5), /timestep 12.5 is not in the schedule/);
  });
});

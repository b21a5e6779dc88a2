// stepq sensitivity: how much INT8 changes the UNet's noise prediction at each denoising step, to choose K
// for the mixed:K schedule. Runs the reference trajectory (bf16 or fp32) and at every UNet call also
// evaluates the INT8 UNet on the same input; the error of a step is
//   ||eps_int8 - eps_ref|| / ||eps_ref||   (eps: the UNet's noise prediction, both CFG halves; with
//                                          --metric guided the prediction after guidance, which amplifies it)
// averaged over the step's UNet calls (PNDM evaluates step 2 twice) and over prompts. The recommended K is
// the smallest K such that every INT8 step of mixed:K (steps K+1 .. N-K) is within the target.
import * as path from "node:path";
import { parse, intOpt, numOpt, sizeOpt, UsageError } from "./args.ts";
import { resolveDefaultModel, DEFAULT_MODEL, StableDiffusionPipeline } from "../pipeline/pipeline.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { defaultCalibrationPrompts } from "../../weights-tools/calibrate.ts";
import type { Precision } from "../models/precision.ts";

export const summary = "per-step INT8 error of the UNet vs BF16/FP32, and the smallest K for mixed:K";

export const usage = `Usage: stepq sensitivity [--model DIR] [options]

Runs the reference trajectory (--ref bf16 or fp32) and at each UNet call also evaluates the INT8 UNet on the
same latents, printing per denoising step the relative error ||eps_int8 - eps_ref|| / ||eps_ref|| of the
noise prediction (mean over the prompts, and the largest), then the smallest K such that every INT8
step of mixed:K is within --target. INT8 needs a calibration (stepq calibrate) or converted weights.

Options:
  --model DIR          diffusers pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --steps N            denoising steps (default 50)
  --prompts N          number of prompts (built-in, as stepq calibrate's; default 2)
  --guidance G         guidance scale (default 4)
  --scheduler NAME     ${SCHEDULER_NAMES.join(" | ")} (default: the model's own)
  --ref P              bf16 (default) | fp32
  --target E           error target for the recommendation (default 0.05)
  --metric M           raw (default: the UNet's noise prediction itself, both CFG halves) | guided (the
                       prediction after classifier-free guidance, what the scheduler uses: guidance
                       amplifies the error about g-fold)
  --seed0 N            prompt i uses seed seed0+i (default 0)
  --calibration FILE   INT8 activation ranges (default: DIR/unet/stepq-calibration.json)
  --threads N, --memory SIZE, --simd MODE
  --json               print one JSON object {steps, errors, max_errors, target, recommended_k, ...}
  -q, --quiet          no progress lines
  -h, --help           show this help`;

export interface SensitivityResult {
  model: string;
  ref: Precision;
  metric: "guided" | "raw";
  steps: number;
  prompts: number;
  guidance: number;
  scheduler: string;
  /** Mean relative error per denoising step (index 0 = first step). */
  errors: number[];
  /** Largest relative error per step over the prompts. */
  max_errors: number[];
  target: number;
  /** Smallest K with every INT8 step of mixed:K within target (by the mean errors); null if even no INT8 step... never. */
  recommended_k: number;
  /** Steps that run INT8 with the recommended K. */
  int8_steps: number;
  seconds: number;
}

/** Smallest K (0 .. floor(n/2)) such that errors[i] <= target for all K <= i < n-K. */
export function recommendK(errors: readonly number[], target: number): number {
  const n = errors.length;
  for (let k = 0; k <= Math.floor(n / 2); k++) {
    let ok = true;
    for (let i = k; i < n - k; i++) if (!(errors[i] <= target)) ok = false;
    if (ok) return k;
  }
  return Math.floor(n / 2);
}

function guided(o: Float32Array, batch: number, g: number): Float32Array {
  if (batch !== 2) return o;
  const n = o.length / 2;
  const e = new Float32Array(n);
  const gg = Math.fround(g);
  for (let j = 0; j < n; j++) e[j] = o[j] + Math.fround(gg * Math.fround(o[n + j] - o[j]));
  return e;
}

export async function runSensitivity(o: {
  model: string;
  steps: number;
  prompts: string[];
  guidance: number;
  scheduler?: string;
  ref: "bf16" | "fp32";
  target: number;
  metric?: "guided" | "raw";
  seed0: number;
  calibration?: string;
  threads?: number;
  memoryBytes?: number;
  simd?: "auto" | "relaxed" | "baseline";
  onProgress?: (msg: string) => void;
}): Promise<SensitivityResult> {
  const t0 = performance.now();
  const pipe = await StableDiffusionPipeline.load(o.model, {
    precisions: [o.ref, "int8"],
    calibration: o.calibration,
    threads: o.threads,
    memoryBytes: o.memoryBytes,
    simd: o.simd,
  });
  try {
    const sum = new Float64Array(o.steps);
    const cnt = new Float64Array(o.steps);
    const max = new Float64Array(o.steps);
    let scheduler = "";
    for (let p = 0; p < o.prompts.length; p++) {
      const perStep = new Float64Array(o.steps);
      const perCnt = new Float64Array(o.steps);
      const res = await pipe.generate({
        prompt: o.prompts[p],
        steps: o.steps,
        guidance: o.guidance,
        scheduler: o.scheduler,
        seed: o.seed0 + p,
        precision: o.ref,
        onUNetCall: (c) => {
          const B = c.input.shape[0];
          const raw = o.metric !== "guided";
          const g = raw ? 1 : c.guidance;
          const ref = guided(c.output.toArray(), raw ? 1 : B, g);
          pipe.unet.setPrecision("int8");
          let q: Float32Array;
          try {
            q = pipe.engine.scope(() => guided(pipe.unet.forward(c.input, c.timestep, c.context).toArray(), raw ? 1 : B, g));
          } finally {
            pipe.unet.setPrecision(o.ref);
          }
          let num = 0, den = 0;
          for (let j = 0; j < ref.length; j++) {
            num += (q[j] - ref[j]) ** 2;
            den += ref[j] ** 2;
          }
          perStep[c.step] += Math.sqrt(num) / Math.sqrt(den || 1e-30);
          perCnt[c.step]++;
        },
        onStep: (s) => o.onProgress?.(`prompt ${p + 1}/${o.prompts.length}, step ${s.denoisingStep}/${o.steps}`),
      });
      scheduler = res.scheduler;
      for (let i = 0; i < o.steps; i++) {
        const e = perStep[i] / Math.max(1, perCnt[i]);
        sum[i] += e;
        cnt[i]++;
        max[i] = Math.max(max[i], e);
      }
    }
    const errors = Array.from(sum, (s, i) => s / cnt[i]);
    const k = recommendK(errors, o.target);
    return {
      model: path.resolve(o.model),
      ref: o.ref,
      metric: o.metric ?? "raw",
      steps: o.steps,
      prompts: o.prompts.length,
      guidance: o.guidance,
      scheduler,
      errors,
      max_errors: Array.from(max),
      target: o.target,
      recommended_k: k,
      int8_steps: o.steps - 2 * k,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    pipe.close();
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    model: { type: "string", short: "m" },
    steps: { type: "string" },
    prompts: { type: "string" },
    guidance: { type: "string", short: "g" },
    scheduler: { type: "string" },
    ref: { type: "string" },
    target: { type: "string" },
    metric: { type: "string" },
    seed0: { type: "string" },
    calibration: { type: "string" },
    threads: { type: "string", short: "t" },
    memory: { type: "string" },
    simd: { type: "string" },
    json: { type: "boolean" },
    quiet: { type: "boolean", short: "q" },
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const model = (v.model as string | undefined) ?? resolveDefaultModel();
  const steps = intOpt(v.steps as string | undefined, "steps", 50, 1, 1000);
  const n = intOpt(v.prompts as string | undefined, "prompts", 2, 1, 10000);
  const ref = (v.ref as string | undefined) ?? "bf16";
  if (ref !== "bf16" && ref !== "fp32") throw new UsageError(`--ref must be bf16 or fp32, got "${ref}"`);
  const metric = (v.metric as string | undefined) ?? "raw";
  if (metric !== "guided" && metric !== "raw") throw new UsageError(`--metric must be guided or raw, got "${metric}"`);
  const scheduler = v.scheduler as string | undefined;
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  const simd = (v.simd as string | undefined) ?? "auto";
  if (!["auto", "relaxed", "baseline"].includes(simd)) throw new UsageError(`--simd must be auto, relaxed or baseline, got "${simd}"`);
  const quiet = !!v.quiet;
  const tty = !!process.stderr.isTTY && !quiet;
  const r = await runSensitivity({
    model,
    steps,
    prompts: defaultCalibrationPrompts(model, n),
    guidance: numOpt(v.guidance as string | undefined, "guidance", 4, 0, 100),
    scheduler,
    ref,
    metric,
    target: numOpt(v.target as string | undefined, "target", 0.05, 0, 1e9),
    seed0: intOpt(v.seed0 as string | undefined, "seed0", 0, 0, 0xffffffff),
    calibration: v.calibration as string | undefined,
    threads: v.threads === undefined ? undefined : intOpt(v.threads as string, "threads", 1, 1, 256),
    memoryBytes: v.memory === undefined ? undefined : sizeOpt(v.memory as string, 0),
    simd: simd as "auto" | "relaxed" | "baseline",
    onProgress: quiet ? undefined : (m) => (tty ? process.stderr.write(`\r${m}   `) : undefined),
  });
  if (tty) process.stderr.write("\n");
  if (v.json) {
    process.stdout.write(JSON.stringify(r) + "\n");
    return 0;
  }
  const peak = Math.max(...r.max_errors, 1e-30);
  const lines = [
    `INT8 vs ${r.ref}: relative error of the ${r.metric === "raw" ? "UNet output" : "guided noise prediction"} per denoising step (${r.prompts} prompt${r.prompts > 1 ? "s" : ""}, ${r.scheduler} ${r.steps} steps, guidance ${r.guidance})`,
    `  step   mean      max`,
    ...r.errors.map((e, i) => `  ${String(i + 1).padStart(4)}   ${e.toFixed(4)}   ${r.max_errors[i].toFixed(4)}  ${"#".repeat(Math.round((40 * e) / peak))}`),
    `target ${r.target}: recommended mixed:${r.recommended_k} (BF16 for the first and last ${r.recommended_k} steps, INT8 for ${r.int8_steps} of ${r.steps})` +
      (r.int8_steps <= 1 && Math.min(...r.errors) > r.target ? `; no step is within the target (smallest error ${Math.min(...r.errors).toFixed(4)})` : ""),
  ];
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}

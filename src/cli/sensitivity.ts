// stepq sensitivity: the CLI of src/tools/sensitivity.ts (per-step INT8 error of the UNet, and the
// smallest K for mixed:K).
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags, modelOption } from "./args.ts";
import { calibrationFlag } from "./inputs.ts";
import { DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { defaultCalibrationPrompts } from "../tools/prompts.ts";
import { runSensitivity } from "../tools/sensitivity.ts";

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
    ...ENGINE_OPTIONS,
    json: { type: "boolean" },
    quiet: { type: "boolean", short: "q" },
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const model = modelOption(v.model);
  const steps = intOpt(v.steps as string | undefined, "steps", 50, 1, 1000);
  const n = intOpt(v.prompts as string | undefined, "prompts", 2, 1, 10000);
  const ref = (v.ref as string | undefined) ?? "bf16";
  if (ref !== "bf16" && ref !== "fp32") throw new UsageError(`--ref must be bf16 or fp32, got "${ref}"`);
  const metric = (v.metric as string | undefined) ?? "raw";
  if (metric !== "guided" && metric !== "raw") throw new UsageError(`--metric must be guided or raw, got "${metric}"`);
  const scheduler = v.scheduler as string | undefined;
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  const engine = engineFlags(v);
  const calibration = await calibrationFlag(v.calibration as string | undefined, { model, int8: true, precision: "int8" });
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
    calibration,
    ...engine,
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

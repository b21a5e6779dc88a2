// stepq calibrate: per-layer input activation ranges of the UNet for INT8 (weights-tools/calibrate.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags, FORCE_OPTION, inputFile, modelOption } from "./args.ts";
import { checkOutputFile, realPathOf } from "../io/outputs.ts";
import { DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { writeCalibration } from "../models/calibration.ts";
import { calibrate, defaultCalibrationOut, DEFAULT_EMA_MOMENTUM } from "../../weights-tools/calibrate.ts";
import { defaultCalibrationPrompts, readPromptsFile } from "../tools/prompts.ts";
import { INT8_CALIBRATION_DEFAULT } from "../nn/quant.ts";

export const summary = "record per-layer activation ranges for INT8 (writes unet/stepq-calibration.json)";

export const usage = `Usage: stepq calibrate [--model DIR] (--prompts FILE | --n N) [options]

Runs the FP32 pipeline over the prompts and all their denoising steps and records, for every conv/linear
layer of the UNet, the min/max of its input activations: by default the running min/max over all UNet calls
(as onnxruntime's MinMax calibration); --observer ema uses a moving average instead (as PyTorch's
MovingAverageMinMaxObserver: the first UNet call sets the range, each later call moves it by
(1 - momentum) toward its own min/max), which clips the steps whose ranges are wider (fashion-sd-tiny, 50
steps, 100 images: INT8 PSNR vs FP32 19.3 dB with momentum 0.9, 24.8 dB with 0.99, 28.5 dB with minmax;
weights-tools/README.md). --observer mse runs the prompts twice: min/max, then a histogram of each input
over it, and keeps per layer the range of least quantisation error (rounding inside plus clipping outside),
which clips rare outliers (fashion-sd-tiny, 8-bit activations: all-INT8 PSNR vs FP32 +0.7 dB over minmax;
docs/quality.md).
INT8 uses these ranges (7-bit asymmetric per-tensor activations by default).
Writes JSON: layer -> {min, max, absMin, absMax, count} plus the settings (model, steps, prompts, observer).
--per-step also records each layer's range per scheduler timestep (running min/max over the prompts'
UNet calls at that timestep); INT8 then uses the range of the current call's timestep (the nearest
calibrated one), since the ranges drift with the timestep and one range over all steps is wider than
any step needs (fashion-sd-tiny, n = 1000: all-INT8 PSNR vs FP32 28.3 -> 29.3 dB, mixed:5 36.4 -> 37.1;
docs/quality.md). Opt-in; not for stepq convert (converted int8 files hold one range per layer).

Options:
  --model DIR        diffusers pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --prompts FILE     prompts, one per line (# comments and blank lines ignored)
  --n N              without --prompts: N built-in prompts (default 20; fashion models get
                     "a photo of a {class}" over the 10 classes, others varied generic prompts)
  --steps N          denoising steps per prompt (default 50)
  --guidance G       guidance scale (default 4)
  --scheduler NAME   ${SCHEDULER_NAMES.join(" | ")} (default: the model's own)
  --seed0 N          prompt i uses seed seed0+i (default 10000)
  --observer TYPE    minmax (running extremes, default) | ema (moving-average min/max) | mse (least
                     quantisation error; two passes)
  --momentum M       EMA momentum (default 0.99: range = 0.99 range + 0.01 this call's, torch's
                     averaging_constant 0.01); only with --observer ema
  --per-step         also record per-timestep ranges (minmax or mse observer; see above)
  --act-bits B       8 (default: activations 0..255) or 7 (0..127: twice the rounding error)
  --weight-bits B    7 (default: weights -63..63, so 8-bit activations run exactly on the relaxed dot on
                     x86 with or without AVX-VNNI) or 8 (-127..127: with 8-bit activations the fused dot
                     on AVX-VNNI, else the exact i16 path, 1.5x slower). The default pair gave +5.1 dB PSNR
                     vs FP32 over 7-bit activations with int8 weights (docs/quality.md)
  --out FILE         output (default: DIR/unet/stepq-calibration.json, where generate/eval/bench look).
                     An existing calibration (JSON) there is replaced, atomically: interrupted, the old
                     file stays whole. Another kind of file, a read-only file, or any other path inside
                     a model folder is refused without --force
  --force            replace FILE whatever it is, or write elsewhere inside a model folder
  --threads N        worker threads including the main one (default: all cores)
  --memory SIZE      engine memory (default: estimated)
  --simd MODE        auto | relaxed | baseline (default auto)
  -q, --quiet        no progress lines
  -h, --help         show this help

Examples:
  stepq calibrate --model models/fashion-sd-tiny --n 20 --steps 50 --guidance 4
  stepq calibrate --n 20 --observer ema --momentum 0.99 --out ema.json     # the paper-style observer
  stepq calibrate --n 20 --observer mse --out cal-mse.json
  stepq calibrate --n 20 --steps 50 --guidance 4 --per-step --out cal-per-step.json`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    model: { type: "string", short: "m" },
    prompts: { type: "string" },
    n: { type: "string" },
    steps: { type: "string" },
    guidance: { type: "string", short: "g" },
    scheduler: { type: "string" },
    seed0: { type: "string" },
    observer: { type: "string" },
    momentum: { type: "string" },
    "act-bits": { type: "string" },
    "weight-bits": { type: "string" },
    "per-step": { type: "boolean" },
    out: { type: "string", short: "o" },
    ...FORCE_OPTION,
    ...ENGINE_OPTIONS,
    quiet: { type: "boolean", short: "q" },
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (v.prompts !== undefined && v.n !== undefined) throw new UsageError("give --prompts FILE or --n N, not both");
  const model = modelOption(v.model);
  if (!fs.existsSync(path.join(model, "model_index.json"))) throw new UsageError(`--model ${model}: not a diffusers pipeline folder (no model_index.json)`);
  let prompts: string[];
  if (v.prompts !== undefined) {
    try {
      prompts = await readPromptsFile(inputFile("--prompts", v.prompts as string));
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`--prompts ${(e as Error).message}`);
    }
  } else prompts = defaultCalibrationPrompts(model, intOpt(v.n as string | undefined, "n", 20, 1, 100000));
  const steps = intOpt(v.steps as string | undefined, "steps", 50, 1, 1000);
  const guidance = numOpt(v.guidance as string | undefined, "guidance", 4, 0, 100);
  const seed0 = intOpt(v.seed0 as string | undefined, "seed0", 10000, 0, 0xffffffff);
  const scheduler = v.scheduler as string | undefined;
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  const obs = (v.observer as string | undefined) ?? "minmax";
  if (obs !== "ema" && obs !== "minmax" && obs !== "mse") throw new UsageError(`--observer must be minmax, ema or mse, got "${obs}"`);
  if (v.momentum !== undefined && obs !== "ema") throw new UsageError("--momentum applies to --observer ema only");
  const perStep = !!v["per-step"];
  if (perStep && obs === "ema")
    throw new UsageError("--per-step records running min/max (or mse) ranges per timestep; --observer ema does not apply (a moving average over one timestep's few calls would keep mostly the last prompt)");
  const momentum = numOpt(v.momentum as string | undefined, "momentum", DEFAULT_EMA_MOMENTUM, 0, 0.999999);
  const actBits = intOpt(v["act-bits"] as string | undefined, "act-bits", INT8_CALIBRATION_DEFAULT.actQmax === 255 ? 8 : 7, 7, 8);
  const weightBits = intOpt(v["weight-bits"] as string | undefined, "weight-bits", INT8_CALIBRATION_DEFAULT.weightQmax === 63 ? 7 : 8, 7, 8);
  const { threads, memoryBytes, simd } = engineFlags(v);
  const out = (v.out as string | undefined) ?? defaultCalibrationOut(model);
  // the model's own unet/stepq-calibration.json is the file this command owns inside the model folder
  const owned = realPathOf(out) === realPathOf(defaultCalibrationOut(model));
  let output: ReturnType<typeof checkOutputFile>;
  try {
    output = checkOutputFile(out, { kind: "json", flag: "--out", force: !!v.force, readFolders: [model], owned });
  } catch (e) {
    if (v.out === undefined && /cannot write in/.test((e as Error).message))
      throw new UsageError(`${(e as Error).message.replace(/^--out /, "")}; pass --out FILE (and later --calibration FILE)`);
    throw e;
  }

  const quiet = !!v.quiet;
  const tty = !!process.stderr.isTTY && !quiet;
  const log = (s: string) => process.stderr.write(`stepq calibrate: ${s}\n`);
  if (!quiet) log(`${prompts.length} prompt(s) x ${steps} steps, guidance ${guidance}, observer ${obs === "ema" ? `moving-average min/max (momentum ${momentum})` : obs === "mse" ? "least quantisation error (two passes over the prompts)" : "min/max"}${perStep ? ", per step" : ""}`);
  let lastPrint = 0;
  const cal = await calibrate({
    model,
    prompts,
    steps,
    guidance,
    scheduler,
    seed0,
    observer: obs === "ema" ? "ema-minmax" : obs === "mse" ? "mse" : "minmax",
    momentum,
    actQmax: actBits === 8 ? 255 : 127,
    weightQmax: weightBits === 7 ? 63 : 127,
    perStep,
    threads,
    memoryBytes,
    simd,
    onProgress: quiet
      ? undefined
      : (p) => {
          const done = p.prompt * p.calls + p.call;
          const total = p.prompts * p.calls;
          const now = performance.now();
          const last = done === total;
          if (!tty && !last && now - lastPrint < 5000) return;
          lastPrint = now;
          const eta = (p.elapsedMs / done) * (total - done);
          const line = `prompt ${p.prompt + 1}/${p.prompts}, UNet call ${p.call}/${p.calls}  ETA ${(eta / 1000).toFixed(0)} s`;
          if (tty) process.stderr.write(`\r${line}   ${last ? "\n" : ""}`);
          else log(line);
        },
  });
  writeCalibration(output.path, cal);
  if (!quiet) log(`${Object.keys(cal.layers).length} layers, ${cal.unetCalls} UNet calls observed${cal.timesteps ? ` at ${cal.timesteps.length} timesteps` : ""}: wrote ${out}`);
  return 0;
}

// stepq qat: quantization-aware training with knowledge distillation (weights-tools/qat.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags, FORCE_OPTION } from "./args.ts";
import { resolveDefaultModel, findBundledOrShared, DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { readPromptsFile } from "../tools/prompts.ts";
import { INT8_CALIBRATION_DEFAULT } from "../nn/quant.ts";
import { QAT_DEFAULTS, QatMemoryError, qat, type Bf16Weights, type LinkMode, type QatProgress, type ScalesMode } from "../../weights-tools/qat.ts";

export const summary = "quantization-aware training with knowledge distillation: a QAT INT8 UNet (writes a pipeline folder)";

export const usage = `Usage: stepq qat [--model DIR] --out DIR2 [--data DIR | --data-free] [options]

Fine-tunes the UNet as a fake-quantised student (every conv/linear layer computes exactly what the engine's
INT8 inference computes) against the float UNet as teacher, the paper's QAT + KD (Algorithm 1):
loss = MSE(eps_student, noise) + kd * MSE(eps_student, eps_teacher), AdamW, grad-norm clip 1.0, EMA of the
weights, after an observer calibration phase of min(steps/2, 300) batches. Writes DIR2, a pipeline folder
every command loads (generate, eval, sensitivity, bench unet --config DIR2): the QAT INT8 UNet
(unet/stepq-int8.safetensors) and the original weights for FP32/BF16 steps.
  stepq generate --model DIR2 --precision mixed:5 --prompt "a photo of a bag"

Data:
  --data DIR             Fashion-MNIST training images (train-*-idx*-ubyte.gz; default ../shared/data/
                         fashion-mnist), preprocessed and captioned as fashion-sd-tiny was trained; the
                         VAE posterior mean x scaling_factor, t uniform in [0, 1000), DDPM noising
  --data-free            no data: distil on the teacher's own sampling trajectories (--scheduler,
                         --sampler-steps, --guidance; prompts from --prompts FILE or the class prompts),
                         the student matched to the teacher's guided output at every call, one step each

Options:
  --model DIR            float pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --out DIR2             output pipeline folder (required)
  --steps N              optimizer steps (default ${QAT_DEFAULTS.steps})
  --batch B              images (data-free: trajectories) per step (default ${QAT_DEFAULTS.batch})
  --lr LR                learning rate (default ${QAT_DEFAULTS.lr})
  --lr-schedule S        constant (default) | cosine
  --kd-weight W          weight of the distillation loss (default ${QAT_DEFAULTS.kdWeight}; 0 = plain QAT)
  --noise-weight W       weight of the noise loss (default 1; 0 = distillation only)
  --observer TYPE        ema (default: torch.ao's moving-average min/max, averaging constant 0.01, the
                         paper's) | minmax (running min/max, as stepq calibrate's default)
  --freeze-ranges        stop observing after the calibration phase (default: observers stay on, torch.ao)
  --init-ranges FILE     start the activation ranges from a stepq calibration file (e.g. MODEL/unet/
                         stepq-calibration.json, recorded on sampling trajectories; with --per-step-scales
                         a per-step file's ranges start each step's, e.g. stepq calibrate --observer mse
                         --per-step); calibration batches then default to 0
  --scales MODE          observer (default: torch.ao moving-average min/max, averaging constant 0.01, as the
                         paper) | lsq (learned step sizes, LSQ/LSQ+: activation scale and offset, per-channel
                         weight scales, initialised from the calibration)
  --per-step-scales      one activation range (or learned scale) per sampler timestep (--scheduler,
                         --sampler-steps); each training batch then shares one of those timesteps
  --act-bits B           8 (default) | 7      activation range of the INT8 layers (as stepq calibrate)
  --weight-bits B        7 (default) | 8      weight range (default: the engine's INT8 default, 8-bit
                         activations x 7-bit weights)
  --calibration-batches N   observer batches before training (default min(steps/2, 300))
  --no-ema               export the last weights instead of their EMA
  --val-batches N        held-out batches on which the student's losses are printed after calibration and
                         for the exported weights (default 16; data-free: one trajectory; 0: none)
  --seed N               data order, captions, timesteps, noise (default 0)
  --scheduler NAME       ${SCHEDULER_NAMES.join(" | ")} (default ${QAT_DEFAULTS.scheduler}) \\
  --sampler-steps N      (default ${QAT_DEFAULTS.samplerSteps})                    > data-free trajectories, per-step table
  --guidance G           (default ${QAT_DEFAULTS.guidance})                       /
  --prompts FILE         data-free prompts, one per line
  --gradient-checkpointing   recompute each UNet block in the backward pass instead of keeping its
                         activations (less memory, more compute)
  --checkpoint-every N   write a checkpoint every N steps (default ${QAT_DEFAULTS.checkpointEvery}; also on Ctrl-C)
  --resume               continue from DIR2/stepq-qat-checkpoint.safetensors (same options); the result is
                         identical to an uninterrupted run
  --keep-checkpoint      keep the checkpoint after the run (default: removed when done)
  --bf16-weights W       original (default, as the paper's pipeline, and measured better: fashion-sd-tiny
                         mixed:5 41.49 dB PSNR vs FP32 against 40.80 with qat, n = 1000, docs/quality.md)
                         | qat: which weights the BF16 steps of a mixed schedule use
  --link MODE            hard (default, else copies) | symlink | copy: how DIR2 gets the other components
                         and the original UNet checkpoint
  --log FILE             also write the JSON progress lines here (DIR2/unet/stepq-qat-log.jsonl always)
  --force                write into an existing folder that is not an earlier stepq qat output (files of
                         the same names are replaced), or inside another model folder. Without it DIR2
                         must be new, empty, or an earlier qat output; never the model or data folder
                         or inside them (checked before any work)
  --threads N, --memory SIZE, --simd MODE   the engine (memory default: what a step needs, see below)
  -q, --quiet            no progress lines
  -h, --help             show this help

Before training it prints what a step needs in memory (weights, master copy, gradients, AdamW state,
activations) and refuses when the engine (at most 4 GiB, wasm32) cannot hold it. A progress line per step
shows the step, the noise and KD losses, samples/s and the ETA. Ctrl-C writes a checkpoint and stops
(exit 130); --resume continues.

Examples:
  stepq qat --out qat-model --steps 300 --batch 8
  stepq qat --out qat-free --data-free --steps 510 --batch 4
  stepq qat --out qat-lsq --scales lsq --per-step-scales`;

function fmtDur(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

const fmtLoss = (x: number | null) => (x === null ? "-" : x.toPrecision(4));

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    model: { type: "string", short: "m" },
    out: { type: "string", short: "o" },
    data: { type: "string" },
    "data-free": { type: "boolean" },
    steps: { type: "string" },
    batch: { type: "string" },
    lr: { type: "string" },
    "lr-schedule": { type: "string" },
    "kd-weight": { type: "string" },
    "noise-weight": { type: "string" },
    observer: { type: "string" },
    "freeze-ranges": { type: "boolean" },
    "init-ranges": { type: "string" },
    "val-batches": { type: "string" },
    scales: { type: "string" },
    "per-step-scales": { type: "boolean" },
    "act-bits": { type: "string" },
    "weight-bits": { type: "string" },
    "calibration-batches": { type: "string" },
    "no-ema": { type: "boolean" },
    seed: { type: "string" },
    scheduler: { type: "string" },
    "sampler-steps": { type: "string" },
    guidance: { type: "string", short: "g" },
    prompts: { type: "string" },
    "gradient-checkpointing": { type: "boolean" },
    "checkpoint-every": { type: "string" },
    resume: { type: "boolean" },
    "keep-checkpoint": { type: "boolean" },
    "bf16-weights": { type: "string" },
    link: { type: "string" },
    log: { type: "string" },
    ...FORCE_OPTION,
    ...ENGINE_OPTIONS,
    quiet: { type: "boolean", short: "q" },
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (v.out === undefined) throw new UsageError("--out DIR2 is required (the output pipeline folder)");
  const model = (v.model as string | undefined) ?? resolveDefaultModel();
  if (!fs.existsSync(path.join(model, "model_index.json"))) throw new UsageError(`--model ${model}: not a diffusers pipeline folder (no model_index.json)`);
  const dataFree = !!v["data-free"];
  if (dataFree && v.data !== undefined) throw new UsageError("give --data DIR or --data-free, not both");
  let data: string | undefined;
  if (!dataFree) {
    if (v.data !== undefined) data = v.data as string;
    else {
      const f = findBundledOrShared(["data", "fashion-mnist"], "train-images-idx3-ubyte.gz");
      if (!f.found) throw new UsageError(`no --data given and Fashion-MNIST training images not found (looked in ${f.candidates.join(", ")}); pass --data DIR or --data-free`);
      data = f.found;
    }
    for (const f of ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
      if (!fs.existsSync(path.join(data, f))) throw new UsageError(`--data ${data}: no ${f} (the Fashion-MNIST training set; never the t10k test set)`);
  }
  if (v["init-ranges"] !== undefined && !fs.existsSync(v["init-ranges"] as string)) throw new UsageError(`--init-ranges ${v["init-ranges"]}: no such file`);
  if (v.prompts !== undefined && !dataFree) throw new UsageError("--prompts applies to --data-free");
  const prompts = v.prompts !== undefined ? await readPromptsFile(v.prompts as string) : undefined;
  const steps = intOpt(v.steps as string | undefined, "steps", QAT_DEFAULTS.steps, 1, 10_000_000);
  const batch = intOpt(v.batch as string | undefined, "batch", QAT_DEFAULTS.batch, 1, 4096);
  const lr = numOpt(v.lr as string | undefined, "lr", QAT_DEFAULTS.lr, 0, 1);
  const lrSchedule = (v["lr-schedule"] as string | undefined) ?? "constant";
  if (lrSchedule !== "constant" && lrSchedule !== "cosine") throw new UsageError(`--lr-schedule must be constant or cosine, got "${lrSchedule}"`);
  const kdWeight = numOpt(v["kd-weight"] as string | undefined, "kd-weight", QAT_DEFAULTS.kdWeight, 0, 1e6);
  const noiseWeight = numOpt(v["noise-weight"] as string | undefined, "noise-weight", 1, 0, 1e6);
  const observer = (v.observer as string | undefined) ?? "ema";
  if (observer !== "ema" && observer !== "minmax") throw new UsageError(`--observer must be ema or minmax, got "${observer}"`);
  const scales = (v.scales as string | undefined) ?? "observer";
  if (scales !== "observer" && scales !== "lsq") throw new UsageError(`--scales must be observer or lsq, got "${scales}"`);
  const actBits = intOpt(v["act-bits"] as string | undefined, "act-bits", INT8_CALIBRATION_DEFAULT.actQmax === 255 ? 8 : 7, 7, 8);
  const weightBits = intOpt(v["weight-bits"] as string | undefined, "weight-bits", INT8_CALIBRATION_DEFAULT.weightQmax === 63 ? 7 : 8, 7, 8);
  const calibrationBatches = v["calibration-batches"] === undefined ? undefined : intOpt(v["calibration-batches"] as string, "calibration-batches", 0, 0, 1_000_000);
  const seed = intOpt(v.seed as string | undefined, "seed", QAT_DEFAULTS.seed, 0, 0xffffffff);
  const scheduler = (v.scheduler as string | undefined) ?? QAT_DEFAULTS.scheduler;
  if (!(SCHEDULER_NAMES as readonly string[]).includes(scheduler)) throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  const samplerSteps = intOpt(v["sampler-steps"] as string | undefined, "sampler-steps", QAT_DEFAULTS.samplerSteps, 1, 1000);
  const guidance = numOpt(v.guidance as string | undefined, "guidance", QAT_DEFAULTS.guidance, 0, 100);
  const checkpointEvery = intOpt(v["checkpoint-every"] as string | undefined, "checkpoint-every", QAT_DEFAULTS.checkpointEvery, 0, 10_000_000);
  const bf16Weights = (v["bf16-weights"] as string | undefined) ?? QAT_DEFAULTS.bf16Weights;
  if (bf16Weights !== "original" && bf16Weights !== "qat") throw new UsageError(`--bf16-weights must be original or qat, got "${bf16Weights}"`);
  const link = (v.link as string | undefined) ?? "hard";
  if (!["hard", "symlink", "copy"].includes(link)) throw new UsageError(`--link must be hard, symlink or copy, got "${link}"`);
  const { threads, memoryBytes, simd } = engineFlags(v);

  const quiet = !!v.quiet;
  const say = (s: string) => process.stderr.write(`stepq qat: ${s}\n`);
  const logFile = v.log as string | undefined;
  const logFd = logFile ? fs.openSync(logFile, v.resume ? "a" : "w") : -1;
  const tty = !!process.stderr.isTTY && !quiet;
  let interrupted = false;
  let interruptedAt = 0;
  const onSigint = () => {
    // a second SIGINT within a second is the same Ctrl-C: on Node 20 the launcher (bin/stepq.js) forwards the
    // terminal's SIGINT to this process, which got it from the terminal too
    if (interrupted && performance.now() - interruptedAt > 1000) process.exit(130);
    if (interrupted) return;
    interrupted = true;
    interruptedAt = performance.now();
    say("interrupted: finishing this step and writing a checkpoint (Ctrl-C again to quit without one)");
  };
  process.on("SIGINT", onSigint);
  let lastPrint = 0;
  const progress = (p: QatProgress) => {
    if (logFd >= 0 && p.phase === "train")
      fs.writeSync(logFd, JSON.stringify({ step: p.step, noise_loss: p.noiseLoss, kd_loss: p.kdLoss, grad_norm: p.gradNorm, lr: p.lr, samples_per_s: p.samplesPerSec, elapsed_s: p.elapsedMs / 1000 }) + "\n");
    if (quiet) return;
    const now = performance.now();
    const last = p.step === p.steps;
    if (!tty && !last && p.phase === "calibrate" && now - lastPrint < 5000) return;
    lastPrint = now;
    const line =
      p.phase === "calibrate"
        ? `calibrate ${p.step}/${p.steps}  ${p.samplesPerSec.toFixed(1)} samples/s  ETA ${fmtDur(p.etaMs)}`
        : `step ${p.step}/${p.steps}  noise ${fmtLoss(p.noiseLoss)}  kd ${fmtLoss(p.kdLoss)}  |g| ${p.gradNorm!.toPrecision(3)}  ${p.samplesPerSec.toFixed(1)} samples/s  ETA ${fmtDur(p.etaMs)}`;
    if (tty && p.phase === "calibrate") process.stderr.write(`\r${line}   ${last ? "\n" : ""}`);
    else say(line);
  };
  try {
    const r = await qat({
      model,
      out: v.out as string,
      data,
      dataFree,
      prompts,
      steps,
      batch,
      lr,
      lrSchedule: lrSchedule as "constant" | "cosine",
      kdWeight,
      noiseWeight,
      observer: observer as "ema" | "minmax",
      observeDuringTraining: !v["freeze-ranges"],
      initRanges: v["init-ranges"] as string | undefined,
      valBatches: v["val-batches"] === undefined ? undefined : intOpt(v["val-batches"] as string, "val-batches", 0, 0, 100000),
      scales: scales as ScalesMode,
      perStepScales: !!v["per-step-scales"],
      actQmax: actBits === 8 ? 255 : 127,
      weightQmax: weightBits === 7 ? 63 : 127,
      calibrationBatches,
      ema: !v["no-ema"],
      seed,
      scheduler,
      samplerSteps,
      guidance,
      checkpointing: !!v["gradient-checkpointing"],
      checkpointEvery,
      resume: !!v.resume,
      keepCheckpoint: !!v["keep-checkpoint"],
      bf16Weights: bf16Weights as Bf16Weights,
      link: link as LinkMode,
      force: !!v.force,
      threads,
      memoryBytes,
      simd,
      onProgress: progress,
      onMessage: quiet ? undefined : say,
      shouldStop: () => interrupted,
    });
    if (r.stopped) {
      say(`stopped at step ${r.step}/${r.steps}: checkpoint ${r.checkpoint}; continue with the same command and --resume`);
      return 130;
    }
    if (!quiet)
      say(`done: ${r.step} steps in ${fmtDur(r.trainSeconds * 1000)} (${r.samplesPerSec.toFixed(2)} samples/s), engine peak ${(r.peakEngineBytes / 1048576).toFixed(0)} MiB (models and training state ${(r.stateEngineBytes / 1048576).toFixed(0)} MiB, a step's activations ${((r.peakEngineBytes - r.stateEngineBytes) / 1048576).toFixed(0)} MiB); wrote ${r.out}`);
    return 0;
  } catch (e) {
    if (e instanceof QatMemoryError) {
      process.stderr.write(`stepq qat: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
    if (logFd >= 0) fs.closeSync(logFd);
  }
}

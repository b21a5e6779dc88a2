// stepq eval: FID, prompt accuracy and PSNR vs FP32 of a pipeline at a precision (src/pipeline/eval.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags, FORCE_OPTION, inputFile, modelOption } from "./args.ts";
import { calibrationFlag } from "./inputs.ts";
import { checkOutputFile, checkOutputFolder } from "../io/outputs.ts";
import { PrecisionSchedule } from "../pipeline/schedule.ts";
import { findBundledOrShared, DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { runEval, evalLabels, classifierClasses, evalImageFileName, EvalError, type EvalResult } from "../tools/eval.ts";

export const summary = "measure FID, prompt accuracy and PSNR vs FP32 on fashion-sd-tiny";

export const EVAL_HELP = `Usage: stepq eval [options]

Generates n images with prompts "a photo of a {class}" (the fashion classifier's classes in label order,
n/10 per class; image i uses seed seed0+i, so every precision starts from the same latents) and reports:
  fid              Fréchet distance of the classifier's 128-d fc1 features of the images against those
                   of the 10k Fashion-MNIST test images (biased upward for small n)
  prompt_accuracy  fraction of images the classifier assigns to the prompt's class
  psnr_vs_fp32     mean per-image PSNR (8-bit RGB, dB) against the FP32 images of the same seeds, over the
                   images that differ (images identical to FP32 are counted in psnr_identical_images);
                   for a non-fp32 precision the FP32 images are generated too (twice the time) unless
                   --reference-images gives them; for fp32 only measured against --reference-images
Reference (diffusers, fp32, PNDM 50 steps, guidance 4, n=1000): FID 12.70, prompt accuracy 0.986.
Progress (with ETA) goes to stderr.

Options:
  --model DIR              diffusers pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --n N                    number of images, a multiple of 10 (default 1000)
  --steps N                denoising steps (default 50)
  --guidance G             classifier-free guidance scale (default 4.0)
  --scheduler NAME         ${SCHEDULER_NAMES.join(" | ")} (default pndm)
  --precision P            fp32 | bf16 | int8 | mixed:K | a schedule string (default fp32; passed to
                           generate as its precision option)
  --schedule LIST          per-step precisions, e.g. bf16*5,int8*40,bf16*5 (instead of --precision)
  --calibration FILE       INT8 activation ranges (default: MODEL/unet/stepq-calibration.json; stepq
                           calibrate makes it)
  --int8-attention         the int8 steps run attention (QK^T, P.V) on the INT8 kernels too (default: f32
                           attention at every precision, as the paper; docs/quality.md measures both)
  --seed0 N                seed of image 0 (default 0)
  --batch N                images per UNet/VAE call (default 20, at most n); every image is bit-identical to
                           generating it alone, so results do not depend on N (only speed and memory do)
  --threads N              worker threads including the main one (default: all cores)
  --memory SIZE            pipeline engine memory, e.g. 512M (default: estimated from the model)
  --simd MODE              auto | relaxed | baseline (default auto)
  --json                   print one JSON object {precision, n, steps, guidance, fid, prompt_accuracy,
                           psnr_vs_fp32, seconds, ...} instead of the text summary
  --out-dir DIR            also write every image as DIR/NNNN-class.png (created if missing; PNGs of those
                           names are replaced, other files of those names refused without --force)
  --save-images FILE       write the n images (u8 [n,H,W,3], settings in the metadata) to a safetensors
                           file; from an fp32 run it serves as --reference-images for later runs. An
                           existing safetensors file there is replaced (atomically); any other file, a
                           read-only one, or a path inside a model folder is refused without --force
  --force                  replace whatever is at --save-images / the --out-dir names, or write inside a
                           model folder
  --reference-images FILE  FP32 images of the same n/steps/guidance/scheduler/seed0 (from --save-images):
                           PSNR against these instead of generating FP32 images
  --no-psnr                for a non-fp32 precision without --reference-images: skip the FP32 images
  --classifier DIR         fashion classifier folder (default: models/fashion-classifier in the package,
                           else ../shared/models/fashion-classifier)
  --data DIR               folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
                           (default: ../shared/data/fashion-mnist)
  -q, --quiet              no progress lines
  -h, --help               show this help

Examples:
  stepq eval --n 1000 --steps 50 --guidance 4 --scheduler pndm --precision fp32 --threads 2 \\
    --save-images fp32-50.safetensors --json
  stepq eval --n 1000 --precision mixed:5 --reference-images fp32-50.safetensors --json`;

export const usage = EVAL_HELP;

/** The folder of `rel` in the package or a ../shared candidate that contains `probe`, else an error naming all of them. */
function findDir(what: string, rel: string[], probe: string): string {
  const { found, candidates } = findBundledOrShared(rel, probe);
  if (!found) throw new UsageError(`${what} not found (looked in ${candidates.join(", ")}); pass it explicitly`);
  return found;
}

function fmtDur(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

function fmtNum(x: number | null, digits: number): string {
  if (x === null) return "n/a";
  if (x === Infinity) return "inf";
  return x.toFixed(digits);
}

/** The JSON form: Infinity (all images identical to FP32) becomes the string "inf". */
export function resultJson(r: EvalResult): string {
  return JSON.stringify(r, (_k, v) => (v === Infinity ? "inf" : v));
}

export async function evalCommand(argv: string[]): Promise<number> {
  const parsed = parse(argv, {
    model: { type: "string", short: "m" },
    n: { type: "string" },
    steps: { type: "string" },
    guidance: { type: "string", short: "g" },
    scheduler: { type: "string" },
    precision: { type: "string" },
    schedule: { type: "string" },
    calibration: { type: "string" },
    "int8-attention": { type: "boolean" },
    seed0: { type: "string" },
    batch: { type: "string" },
    ...ENGINE_OPTIONS,
    json: { type: "boolean" },
    "out-dir": { type: "string" },
    ...FORCE_OPTION,
    "save-images": { type: "string" },
    "reference-images": { type: "string" },
    "no-psnr": { type: "boolean" },
    classifier: { type: "string" },
    data: { type: "string" },
    quiet: { type: "boolean", short: "q" },
  });
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const positionals = parsed.positionals;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const n = intOpt(v.n as string | undefined, "n", 1000, 1, 1_000_000);
  const steps = intOpt(v.steps as string | undefined, "steps", 50, 1, 1000);
  const guidance = numOpt(v.guidance as string | undefined, "guidance", 4.0, 0, 100);
  const seed0 = intOpt(v.seed0 as string | undefined, "seed0", 0, 0, 0xffffffff);
  const batch = Math.min(intOpt(v.batch as string | undefined, "batch", 20, 1, 100000), n);
  const { threads, memoryBytes, simd } = engineFlags(v);
  const scheduler = (v.scheduler as string | undefined) ?? "pndm";
  if (!(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  if (v.precision !== undefined && v.schedule !== undefined) throw new UsageError("give --precision or --schedule, not both");
  const precision = (((v.precision ?? v.schedule) as string | undefined) ?? "fp32").trim();
  if (!precision) throw new UsageError("--precision must not be empty");
  let int8 = false;
  try {
    int8 = PrecisionSchedule.parse(precision, steps).used.includes("int8");
  } catch (e) {
    throw new UsageError(`--${v.schedule !== undefined ? "schedule" : "precision"}: ${(e as Error).message}`);
  }
  if (seed0 + n - 1 > 0xffffffff) throw new UsageError(`--seed0 ${seed0} + --n ${n} - 1 exceeds the largest seed 4294967295`);

  const classifierDir = (v.classifier as string | undefined) ?? findDir("the fashion classifier", ["models", "fashion-classifier"], "model.safetensors");
  const dataDir = (v.data as string | undefined) ?? findDir("the Fashion-MNIST test set", ["data", "fashion-mnist"], "t10k-images-idx3-ubyte.gz");
  let classes: string[];
  try {
    classes = await classifierClasses(classifierDir);
  } catch (e) {
    throw new UsageError(`--classifier ${classifierDir}: ${(e as Error).message}`);
  }
  try {
    evalLabels(n, classes.length);
  } catch {
    throw new UsageError(`--n must be a multiple of ${classes.length} (n/${classes.length} images per class), got ${n}`);
  }
  const ref = v["reference-images"] as string | undefined;
  if (ref !== undefined) inputFile("--reference-images", ref);
  const model = modelOption(v.model);
  const calibration = await calibrationFlag(v.calibration as string | undefined, { model, int8, precision });
  // outputs, before hours of generation: the images file, the PNG folder and every PNG name in it
  const force = !!v.force;
  const readFolders = [model, classifierDir];
  if (v["save-images"] !== undefined) checkOutputFile(v["save-images"] as string, { kind: "safetensors", flag: "--save-images", force, readFolders });
  const outDir = v["out-dir"] as string | undefined;
  if (outDir !== undefined) {
    const parent = path.dirname(path.resolve(outDir));
    if (!fs.existsSync(parent)) throw new UsageError(`--out-dir ${outDir}: folder ${parent} does not exist`);
    checkOutputFolder(outDir, { flag: "--out-dir", readFolders, force });
    if (fs.existsSync(outDir)) {
      const labels = evalLabels(n, classes.length);
      for (let i = 0; i < n; i++) {
        const f = path.join(outDir, evalImageFileName(i, classes[labels[i]]));
        if (fs.existsSync(f)) checkOutputFile(f, { kind: "png", flag: "--out-dir", force, readFolders });
      }
    }
  }
  const quiet = !!v.quiet;
  const tty = !!process.stderr.isTTY && !quiet;
  const log = (s: string) => process.stderr.write(`stepq eval: ${s}\n`);

  let lastPrint = 0;
  let result: EvalResult;
  try {
    result = await runEval({
      model,
      classifierDir,
      dataDir,
      n,
      steps,
      guidance,
      scheduler,
      precision,
      calibration: int8 ? calibration : undefined,
      int8Attention: !!v["int8-attention"],
      seed0,
      batch,
      threads,
      memoryBytes,
      simd,
      outDir: v["out-dir"] as string | undefined,
      saveImages: v["save-images"] as string | undefined,
      referenceImages: ref,
      fp32Reference: !v["no-psnr"],
      onLog: quiet ? undefined : log,
      onProgress: quiet
        ? undefined
        : (p) => {
            const now = performance.now();
            const last = p.done === p.total;
            if (!tty && !last && p.done !== 1 && now - lastPrint < 10_000) return;
            lastPrint = now;
            const line = `${precision}: ${p.done}/${p.total} images  ${(p.perImageMs / 1000).toFixed(2)} s/image  elapsed ${fmtDur(p.elapsedMs)}  ETA ${fmtDur(p.etaMs)}`;
            if (tty) process.stderr.write(`\r${line}   ${last ? "\n" : ""}`);
            else log(line);
          },
    });
  } catch (e) {
    if (e instanceof EvalError) throw new UsageError(e.message);
    throw e;
  }
  if (v.json) process.stdout.write(resultJson(result) + "\n");
  else {
    const r = result;
    process.stdout.write(
      [
        `precision ${r.precision}, n ${r.n}, ${r.scheduler} ${r.steps} steps, guidance ${r.guidance}, seeds ${r.seed0}..${r.seed0 + r.n - 1}, ${r.threads} threads, batch ${r.batch}`,
        `FID              ${r.fid.toFixed(3)}`,
        `prompt accuracy  ${r.prompt_accuracy.toFixed(4)}  (per class: ${r.per_class_accuracy.map((a, i) => `${classes[i]} ${a.toFixed(2)}`).join(", ")})`,
        `PSNR vs fp32     ${r.psnr_vs_fp32 === null ? "n/a (fp32 run; pass --reference-images to compare)" : `${fmtNum(r.psnr_vs_fp32, 2)} dB mean, ${fmtNum(r.psnr_min, 2)} dB min, ${r.psnr_identical_images} identical (reference: ${r.psnr_reference})`}`,
        ...(r.calibration ? [`INT8 ranges      ${r.calibration}${r.calibration_per_step ? " (per timestep)" : ""}`] : []),
        `classifier test accuracy ${r.classifier_test_accuracy.toFixed(4)}; ${r.seconds.toFixed(1)} s total, ${r.generate_seconds.toFixed(1)} s generating`,
      ].join("\n") + "\n",
    );
  }
  return 0;
}

export const run = evalCommand;

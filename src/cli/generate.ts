// stepq generate: text to PNG with a diffusers Stable Diffusion folder (default: the shipped fashion-sd-tiny).
import { int8PathSummary } from "../nn/int8.ts";
import * as path from "node:path";
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags, FORCE_OPTION, inputFile, modelOption } from "./args.ts";
import { calibrationFlag } from "./inputs.ts";
import { StableDiffusionPipeline } from "../pipeline/pipeline.ts";
import { DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { SafetensorsFile, SafetensorsError } from "../io/safetensors.ts";
import { FLOAT_DTYPES } from "../models/weights.ts";
import { pipelineGeometry } from "../pipeline/geometry.ts";
import { checkOutputFile } from "../io/outputs.ts";
import { PrecisionSchedule, PrecisionScheduleError } from "../pipeline/schedule.ts";
import { writePng } from "../io/png.ts";

export const summary = "generate an image from a text prompt (writes a PNG)";

export const usage = `Usage: stepq generate --prompt "TEXT" [options]

Generates one image with a Stable Diffusion model in the diffusers folder layout and writes it as PNG.
Progress goes to stderr, one line per step.

Options:
  --prompt TEXT            what to draw (required)
  --negative-prompt TEXT   what to steer away from (default: empty; used when --guidance > 1)
  --model DIR              diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
                           tokenizer/, scheduler/); default: the shipped ${DEFAULT_MODEL}
  --steps N                denoising steps (default 50)
  --guidance G             classifier-free guidance scale (default 7.5; <= 1 disables guidance)
  --seed N                 seed of the initial noise, 0..4294967295 (default: random, printed)
  --scheduler NAME         ${SCHEDULER_NAMES.join(" | ")} (default: the model's own scheduler)
  --width W, --height H    image size in pixels (default: the model's native size): multiples of 8 and of
                           the model's size unit, VAE scale x 2^(UNet levels - 1) (64 for SD 1.x/2.x, 16
                           for fashion-sd-tiny)
  --precision P            UNet precision: fp32 | bf16 | int8 | mixed:K (BF16 for the first K and last K
                           steps, INT8 between; default fp32). int8 needs a calibration (stepq calibrate)
                           or converted weights (stepq convert)
  --schedule LIST          explicit per-step precisions, e.g. bf16*5,int8*40,bf16*5 (counts add up to
                           --steps; steps are denoising steps: PNDM's extra UNet call runs at its step's)
  --calibration FILE       INT8 activation ranges (default: MODEL/unet/stepq-calibration.json); a warning when
                           the run has no int8 step, an error when the model has converted int8 weights
                           (unet/stepq-int8.safetensors: they hold their own ranges)
  --int8-attention         the int8 steps run attention (QK^T, P.V) on the INT8 kernels too (default: f32
                           attention at every precision, as the paper)
  --latents FILE           start from these latents instead of seeded noise: a safetensors file with
                           one tensor of shape [1,4,H/8,W/8] (unscaled noise; H/4,W/4 for
                           fashion-sd-tiny, whose VAE has 3 levels)
  --threads N              worker threads including the main one (default: all cores)
  --memory SIZE            engine memory, e.g. 512M or 2G (default: estimated from the model)
  --simd MODE              auto | relaxed | baseline (default auto)
  --out FILE               output PNG (default image.png). An existing PNG there is replaced (atomically:
                           the old file stays whole until the new one is complete); any other file, a
                           read-only file, or a path inside a model folder is refused without --force
  --force                  replace FILE whatever it is, or write inside a model folder
  -q, --quiet              no progress lines
  -h, --help               show this help

Example:
  stepq generate --prompt "a photo of a sneaker" --steps 20 --guidance 4 --seed 1 --out sneaker.png`;

/** Reads a --latents file: exactly one float tensor, shape [1,C,h,w], finite values. Problems are usage errors naming the file. */
export async function readLatentsFile(file: string): Promise<{ data: Float32Array; shape: number[] }> {
  let st: SafetensorsFile;
  try {
    st = await SafetensorsFile.open(inputFile("--latents", file));
  } catch (e) {
    if (e instanceof SafetensorsError) throw new UsageError(`--latents ${e.message}`);
    throw e;
  }
  try {
    const names = [...st.tensors.keys()];
    if (names.length !== 1) throw new UsageError(`--latents ${file}: expected one tensor, found ${names.length}${names.length ? ` (${names.slice(0, 5).join(", ")})` : ""}`);
    const info = st.info(names[0]);
    const s = info.shape;
    if (s.length !== 4 || s[0] !== 1 || s[2] < 1 || s[3] < 1)
      throw new UsageError(`--latents ${file}: tensor ${names[0]} has shape [${s}], expected [1,4,h,w] (NCHW latents)`);
    if (!FLOAT_DTYPES.includes(info.dtype)) throw new UsageError(`--latents ${file}: tensor ${names[0]} is ${info.dtype}, expected a float tensor (${FLOAT_DTYPES.join(", ")})`);
    const data = await st.readF32(names[0]);
    const bad = data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new UsageError(`--latents ${file}: tensor ${names[0]} has a non-finite value (${data[bad]}) at index ${bad}`);
    return { data, shape: s.slice() };
  } finally {
    st.close();
  }
}

function fmtS(ms: number): string {
  const s = ms / 1000;
  return s < 10 ? s.toFixed(2) : s.toFixed(1);
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      prompt: { type: "string", short: "p" },
      "negative-prompt": { type: "string", short: "n" },
      model: { type: "string", short: "m" },
      steps: { type: "string" },
      guidance: { type: "string", short: "g" },
      seed: { type: "string", short: "s" },
      scheduler: { type: "string" },
      width: { type: "string", short: "W" },
      height: { type: "string", short: "H" },
      latents: { type: "string" },
      precision: { type: "string" },
      schedule: { type: "string" },
      calibration: { type: "string" },
      "int8-attention": { type: "boolean" },
      ...ENGINE_OPTIONS,
      out: { type: "string", short: "o" },
      ...FORCE_OPTION,
      quiet: { type: "boolean", short: "q" },
    },
    true,
  );
  const v = values as Record<string, string | boolean | string[] | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}" (quote the prompt: --prompt "...")`);
  const prompt = v.prompt as string | undefined;
  if (prompt === undefined) throw new UsageError("--prompt is required");
  const steps = intOpt(v.steps as string | undefined, "steps", 50, 1, 1000);
  const guidance = numOpt(v.guidance as string | undefined, "guidance", 7.5, 0, 100);
  const seedGiven = v.seed !== undefined;
  const seed = intOpt(v.seed as string | undefined, "seed", Math.floor(Math.random() * 0x100000000), 0, 0xffffffff);
  const { threads, memoryBytes, simd } = engineFlags(v);
  const scheduler = v.scheduler as string | undefined;
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  let width = v.width === undefined ? undefined : intOpt(v.width as string, "width", 0, 8, 8192);
  let height = v.height === undefined ? undefined : intOpt(v.height as string, "height", 0, 8, 8192);
  for (const [name, x] of [["width", width], ["height", height]] as const)
    if (x !== undefined && x % 8) throw new UsageError(`--${name} must be a multiple of 8, got ${x}`);
  const out = (v.out as string | undefined) ?? "image.png";
  if (v.precision !== undefined && v.schedule !== undefined) throw new UsageError("give --precision or --schedule, not both");
  const precisionSpec = ((v.precision ?? v.schedule) as string | undefined) ?? "fp32";
  let schedule: PrecisionSchedule;
  try {
    schedule = PrecisionSchedule.parse(precisionSpec, steps);
  } catch (e) {
    if (e instanceof PrecisionScheduleError) throw new UsageError(`--${v.schedule !== undefined ? "schedule" : "precision"}: ${e.message}`);
    throw e;
  }
  const lowp = schedule.toLoad !== undefined;
  const quiet = !!v.quiet;
  const log = (s: string) => process.stderr.write(s + "\n");
  const model = modelOption(v.model);
  // everything named by a flag is checked before the model loads: input files, the output, sizes
  const calibration = await calibrationFlag(v.calibration as string | undefined, { model, int8: schedule.used.includes("int8"), precision: String(schedule) });

  let latents: Float32Array | undefined;
  let latentShape: number[] | undefined;
  if (v.latents !== undefined) {
    const file = v.latents as string;
    const l = await readLatentsFile(file);
    latents = l.data;
    latentShape = l.shape;
  }
  const output = checkOutputFile(out, { kind: "png", flag: "--out", force: !!v.force, readFolders: [model] });
  const geo = await pipelineGeometry(model);
  for (const [name, x] of [["width", width], ["height", height]] as const)
    if (x !== undefined && x % geo.sizeUnit)
      throw new UsageError(`--${name} ${x} is not a multiple of ${geo.sizeUnit}, this model's size unit (VAE scale ${geo.vaeScale} x UNet downsampling ${geo.latentUnit}, and a multiple of 8)`);
  if (latentShape) {
    const [, c, lh, lw] = latentShape;
    const file = v.latents as string;
    const sc = geo.vaeScale;
    if (c !== geo.latentChannels)
      throw new UsageError(`--latents ${file}: shape [${latentShape}] has ${c} channels; this model's latents are [1,${geo.latentChannels},H/${sc},W/${sc}]`);
    const cellUnit = geo.sizeUnit / sc;
    if (lh % cellUnit || lw % cellUnit)
      throw new UsageError(`--latents ${file}: shape [${latentShape}]: latent height and width must be multiples of ${cellUnit} for this model (images ${lh * sc}x${lw * sc} are not multiples of its size unit ${geo.sizeUnit})`);
  }
  const pipe = await StableDiffusionPipeline.load(model, {
    threads,
    memoryBytes,
    simd,
    // memory estimate: the latents' size at up to 8 pixels per cell
    width: width ?? (latentShape ? latentShape[3] * 8 : undefined),
    height: height ?? (latentShape ? latentShape[2] * 8 : undefined),
    onWarning: (m) => log(`stepq: warning: ${m}`),
    // load only the UNet variants the schedule uses (plain fp32 weights for fp32)
    precisions: schedule.toLoad,
    // (calibrationFlag has warned when the run has no int8 step)
    calibration: schedule.used.includes("int8") ? calibration : undefined,
    int8Attention: !!v["int8-attention"],
  });
  try {
    if (latentShape) {
      // the image size follows from the latents: latent cells * the VAE's scale factor
      const lc = pipe.unet.config.in_channels;
      const file = v.latents as string;
      const [, c, lh, lw] = latentShape;
      const sc = pipe.vaeScale;
      if (c !== lc) throw new UsageError(`--latents ${file}: shape [${latentShape}] has ${c} channels; this model's latents are [1,${lc},H/${sc},W/${sc}]`);
      if (width !== undefined && width !== lw * sc) throw new UsageError(`--width ${width} does not match --latents ${file} of shape [${latentShape}] (width ${lw * sc})`);
      if (height !== undefined && height !== lh * sc) throw new UsageError(`--height ${height} does not match --latents ${file} of shape [${latentShape}] (height ${lh * sc})`);
      width = lw * sc;
      height = lh * sc;
    }
    const eng = pipe.engine;
    const st = eng.stats();
    const w = width ?? pipe.defaultWidth;
    const h = height ?? pipe.defaultHeight;
    const sched = pipe.createScheduler(scheduler);
    log(
      `stepq: ${path.basename(path.resolve(model))} loaded in ${fmtS(pipe.loadMs)} s (${eng.threads} thread${eng.threads > 1 ? "s" : ""}, ${eng.simd} SIMD, ` +
        `${Math.round(st.used / 1048576)}/${Math.round(st.capacity / 1048576)} MiB)`,
    );
    log(
      `stepq: ${w}x${h}, ${sched.name} ${steps} steps, guidance ${guidance}, ${latents ? `latents ${v.latents}` : `seed ${seed}${seedGiven ? "" : " (random)"}`}, ` +
        `precision ${schedule}`,
    );
    if (schedule.used.includes("int8")) log(`stepq: int8 dot path: ${int8PathSummary(eng)}; attention ${pipe.unet.int8Attention ? "INT8 (--int8-attention)" : "f32"}`);
    const tty = process.stderr.isTTY && !quiet;
    const res = await pipe.generate({
      prompt,
      negativePrompt: v["negative-prompt"] as string | undefined,
      steps,
      guidance,
      seed: latents ? undefined : seed,
      latents,
      scheduler,
      width: w,
      height: h,
      precision: schedule,
      onStep: quiet
        ? undefined
        : (s) => {
            const per = s.elapsedMs / s.step;
            // the precision tag when the run uses a low precision: "step 3/50 [int8] 0.42 s/step  ETA ..."
            const tag = lowp ? ` [${s.precision}]` : "";
            const line = `step ${s.step}/${s.total}${tag}  ${fmtS(lowp ? s.stepMs : per)} s/step  ETA ${fmtS(per * (s.total - s.step))} s`;
            if (tty) process.stderr.write(`\r${line}   ${s.step === s.total ? "\n" : ""}`);
            else log(line);
          },
    });
    writePng(output.path, res.image, res.width, res.height);
    const t = res.timings;
    log(
      `stepq: done in ${fmtS(t.totalMs + pipe.loadMs)} s (load ${fmtS(pipe.loadMs)} s, text ${fmtS(t.textMs)} s, ${t.stepMs.length} steps ${fmtS(t.denoiseMs)} s, ` +
        `decode ${fmtS(t.decodeMs)} s; peak memory ${Math.round(eng.stats().peak / 1048576)} MiB): wrote ${out}${output.replaces ? " (replaced the existing file)" : ""}`,
    );
    return 0;
  } finally {
    pipe.close();
  }
}

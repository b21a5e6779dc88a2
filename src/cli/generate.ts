// stepq generate: text to PNG with a diffusers Stable Diffusion folder (default: the shipped fashion-sd-tiny).
import { int8PathSummary } from "../nn/int8.ts";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags } from "./args.ts";
import { StableDiffusionPipeline } from "../pipeline/pipeline.ts";
import { resolveDefaultModel, DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
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
  --width W, --height H    image size in pixels, multiples of 8 (default: the model's native size)
  --precision P            UNet precision: fp32 | bf16 | int8 | mixed:K (BF16 for the first K and last K
                           steps, INT8 between; default fp32). int8 needs a calibration (stepq calibrate)
                           or converted weights (stepq convert)
  --schedule LIST          explicit per-step precisions, e.g. bf16*5,int8*40,bf16*5 (counts add up to
                           --steps; steps are denoising steps: PNDM's extra UNet call runs at its step's)
  --calibration FILE       INT8 activation ranges (default: MODEL/unet/stepq-calibration.json)
  --latents FILE           start from these latents instead of seeded noise: a safetensors file with
                           one tensor of shape [1,4,H/8,W/8] (unscaled noise; H/4,W/4 for
                           fashion-sd-tiny, whose VAE has 3 levels)
  --threads N              worker threads including the main one (default: all cores)
  --memory SIZE            engine memory, e.g. 512M or 2G (default: estimated from the model)
  --simd MODE              auto | relaxed | baseline (default auto)
  --out FILE               output PNG (default image.png)
  -q, --quiet              no progress lines
  -h, --help               show this help

Example:
  stepq generate --prompt "a photo of a sneaker" --steps 20 --guidance 4 --seed 1 --out sneaker.png`;

/** Reads a --latents file: exactly one tensor, shape [1,C,h,w]. */
export async function readLatentsFile(file: string): Promise<{ data: Float32Array; shape: number[] }> {
  const st = await SafetensorsFile.open(file);
  try {
    const names = [...st.tensors.keys()];
    if (names.length !== 1) throw new UsageError(`--latents ${file}: expected one tensor, found ${names.length}${names.length ? ` (${names.slice(0, 5).join(", ")})` : ""}`);
    const info = st.info(names[0]);
    const s = info.shape;
    if (s.length !== 4 || s[0] !== 1 || s[2] < 1 || s[3] < 1)
      throw new UsageError(`--latents ${file}: tensor ${names[0]} has shape [${s}], expected [1,4,h,w] (NCHW latents)`);
    return { data: await st.readF32(names[0]), shape: s.slice() };
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
      ...ENGINE_OPTIONS,
      out: { type: "string", short: "o" },
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
  const calibration = v.calibration as string | undefined;
  if (calibration !== undefined && !fs.existsSync(calibration)) throw new UsageError(`--calibration ${calibration}: no such file`);
  const quiet = !!v.quiet;

  let latents: Float32Array | undefined;
  let latentShape: number[] | undefined;
  if (v.latents !== undefined) {
    const file = v.latents as string;
    const l = await readLatentsFile(file);
    latents = l.data;
    latentShape = l.shape;
  }
  const outDir = path.dirname(path.resolve(out));
  if (!fs.existsSync(outDir)) throw new UsageError(`--out ${out}: folder ${outDir} does not exist`);

  const model = (v.model as string | undefined) ?? resolveDefaultModel();
  const log = (s: string) => process.stderr.write(s + "\n");
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
    calibration,
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
    if (schedule.used.includes("int8")) log(`stepq: int8 dot path: ${int8PathSummary(eng)}`);
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
    writePng(out, res.image, res.width, res.height);
    const t = res.timings;
    log(
      `stepq: done in ${fmtS(t.totalMs + pipe.loadMs)} s (load ${fmtS(pipe.loadMs)} s, text ${fmtS(t.textMs)} s, ${t.stepMs.length} steps ${fmtS(t.denoiseMs)} s, ` +
        `decode ${fmtS(t.decodeMs)} s; peak memory ${Math.round(eng.stats().peak / 1048576)} MiB): wrote ${out}`,
    );
    return 0;
  } finally {
    pipe.close();
  }
}

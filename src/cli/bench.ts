// stepq bench: UNet latency (per call, peak memory, optional time by kernel) and whole-image timings.
// The measuring is in src/pipeline/bench.ts; this file parses options and prints.
import { parse, intOpt, numOpt, UsageError, ENGINE_OPTIONS, engineFlags, inputFile } from "./args.ts";
import { benchImage, benchUNet, PRECISIONS, type ImageBenchResult, type Precision, type UNetBenchResult } from "../tools/bench.ts";
import { DEFAULT_MODEL } from "../io/places.ts";
import { SCHEDULER_NAMES } from "../pipeline/schedulers.ts";

export const summary = "measure UNet calls (time, memory, op profile) or a whole generation";

export const usage = `Usage: stepq bench unet [options]
       stepq bench image [options]

stepq bench unet: builds a UNet, runs warm-up calls then timed calls on random inputs, and prints seconds
per call (median and min), peak memory, threads, SIMD build, runtime and precision.
  --config NAME            sd15 | sd21 (built-in configs, random weights: latency does not depend on the
                           values) | fashion (the shipped ${DEFAULT_MODEL}, its weights) | PATH (a diffusers
                           unet or pipeline folder, its weights); default sd15
  --precision P            ${PRECISIONS.join(" | ")} (default fp32). int8 uses the checkpoint's calibration
                           (unet/stepq-calibration.json, or --calibration) when there is one, else a fixed
                           synthetic activation range (random weights: always): latency is the same, and
                           the result says which (act_ranges)
  --int8-attention         int8: attention (QK^T, P.V) on the INT8 kernels too (default f32 attention)
  --batch N                batch (default 2: one classifier-free-guidance call)
  --size N                 latent height = width (default: the config's sample_size, 64 for SD 1.5)
  --iters N                timed calls (default 3)
  --warmup N               untimed calls first (default 1)
  --profile                also print the time by kernel (summed over the timed calls, per call)
  --random-weights         random weights even for fashion / PATH
  --seed N                 seed of the random weights and inputs (default 0)

stepq bench image: one text-to-image generation; prints the time of each stage (text encoder, every
denoising step, VAE decode), peak memory, threads, SIMD build, runtime.
  --model DIR              diffusers pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --steps N                denoising steps (default 20)
  --guidance G             guidance scale (default 7.5)
  --precision P            ${PRECISIONS.join(" | ")} | mixed:K (default fp32); int8 needs a calibration
  --schedule LIST          per-step precisions, e.g. bf16*5,int8*10,bf16*5 (counts add up to --steps)
  --prompt TEXT            default "a photo of a sneaker"
  --scheduler NAME         ${SCHEDULER_NAMES.join(" | ")} (default: the model's own)
  --width W, --height H    image size (default: the model's native size)
  --seed N                 seed of the initial noise (default 1)

Both:
  --calibration FILE       INT8 activation ranges (default: the model's unet/stepq-calibration.json)
  --threads N              worker threads including the main one (default: all cores)
  --memory SIZE            engine memory, e.g. 512M or 4G (default: sized from the model and precision)
  --simd MODE              auto | relaxed | baseline (default auto)
  --json                   print one JSON object on stdout (progress still goes to stderr)
  -q, --quiet              no progress lines
  -h, --help               show this help

Examples:
  stepq bench unet --config sd15 --iters 1 --profile
  stepq bench unet --config fashion --iters 20 --json
  stepq bench image --steps 20`;

/** Where output goes (tests pass their own). */
export interface BenchIo {
  out(s: string): void;
  err(s: string): void;
  /** Whether err is a terminal (progress then rewrites one line). */
  errIsTty?: boolean;
}

const defaultIo: BenchIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  errIsTty: !!process.stderr?.isTTY,
};

const MiB = 1048576;
const mib = (b: number) => `${Math.round(b / MiB)} MiB`;

function fmtS(s: number): string {
  return s < 1 ? s.toFixed(4) : s < 100 ? s.toFixed(3) : s.toFixed(1);
}

function commonOpts(v: Record<string, unknown>, anySpec = false) {
  const { threads, memoryBytes, simd } = engineFlags(v);
  const precision = (v.precision as string | undefined) ?? "fp32";
  if (!anySpec && !(PRECISIONS as readonly string[]).includes(precision)) throw new UsageError(`--precision must be one of ${PRECISIONS.join(", ")}, got "${precision}"`);
  const calibration = v.calibration as string | undefined;
  if (calibration !== undefined) inputFile("--calibration", calibration);
  return { threads, memoryBytes, simd, precision: precision as Precision, calibration };
}

function progressPrinter(io: BenchIo, quiet: boolean) {
  if (quiet) return () => {};
  // on a terminal the "building: N%" lines rewrite one line; everything else gets its own line
  let inPlace = false;
  return (msg: string) => {
    const transient = !!io.errIsTty && /^building: /.test(msg);
    if (inPlace) io.err("\r\x1b[K");
    io.err(`stepq bench: ${msg}${transient ? "" : "\n"}`);
    inPlace = transient;
  };
}

export async function run(argv: string[], io: BenchIo = defaultIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === "unet") return runUNet(rest, io);
  if (sub === "image") return runImage(rest, io);
  if (sub === undefined) throw new UsageError("say what to measure: stepq bench unet | stepq bench image");
  throw new UsageError(`unknown benchmark "${sub}" (unet or image)`);
}

/** Alias of run() under the name the bench issue asked for. */
export const benchCommand = run;
export const BENCH_HELP = usage;

const COMMON = {
  ...ENGINE_OPTIONS,
  precision: { type: "string" },
  calibration: { type: "string" },
  json: { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  seed: { type: "string" },
} as const;

async function runUNet(argv: string[], io: BenchIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...COMMON,
    config: { type: "string", short: "c" },
    batch: { type: "string" },
    size: { type: "string" },
    iters: { type: "string", short: "n" },
    warmup: { type: "string" },
    profile: { type: "boolean" },
    "random-weights": { type: "boolean" },
    "int8-attention": { type: "boolean" },
  }, true);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const v = values as Record<string, unknown>;
  const c = commonOpts(v);
  const r = await benchUNet({
    config: (v.config as string | undefined) ?? "sd15",
    precision: c.precision,
    threads: c.threads,
    memoryBytes: c.memoryBytes,
    simd: c.simd,
    batch: intOpt(v.batch as string | undefined, "batch", 2, 1, 64),
    size: v.size === undefined ? undefined : intOpt(v.size as string, "size", 0, 1, 1024),
    iters: intOpt(v.iters as string | undefined, "iters", 3, 1, 100000),
    warmup: intOpt(v.warmup as string | undefined, "warmup", 1, 0, 100000),
    seed: intOpt(v.seed as string | undefined, "seed", 0, 0, 0xfffffffe),
    profile: !!v.profile,
    randomWeights: !!v["random-weights"],
    calibration: c.calibration,
    int8Attention: !!v["int8-attention"],
    onProgress: progressPrinter(io, !!v.quiet),
  });
  if (v.json) io.out(JSON.stringify(r) + "\n");
  else io.out(formatUNet(r));
  return r.output_finite ? 0 : 1;
}

export function formatUNet(r: UNetBenchResult): string {
  const lines = [
    `stepq bench unet: ${r.model} (${(r.params / 1e6).toFixed(1)} M parameters), ${r.precision}, ${r.weights} weights` +
      (r.act_ranges === "synthetic" ? " (INT8 with synthetic activation ranges: latency only)" : r.act_ranges === "calibrated" ? " (calibrated INT8 activation ranges)" : ""),
    `  input         batch ${r.batch}, ${r.latent_size}x${r.latent_size} latents, context ${r.context_length} tokens, timestep ${r.timestep}`,
    `  per call      ${fmtS(r.seconds_per_call)} s median, ${fmtS(r.seconds_min)} s min, ${fmtS(r.seconds_max)} s max (${r.iters} call${r.iters > 1 ? "s" : ""} after ${r.warmup} warm-up)`,
    `  memory        engine peak ${mib(r.peak_bytes)} (weights ${mib(r.weight_bytes)}, engine size ${mib(r.capacity_bytes)}); RSS ${mib(r.rss_bytes)}` +
      (r.max_rss_bytes ? `, peak RSS ${mib(r.max_rss_bytes)}` : ""),
    `  runtime       ${r.runtime} (V8 ${r.v8}), ${r.simd} SIMD, ${r.threads} thread${r.threads > 1 ? "s" : ""}; model built in ${r.build_seconds.toFixed(1)} s`,
    ...(r.int8_dot ? [`  int8 dot      ${r.int8_dot}`] : []),
    ...(r.int8_attention !== undefined ? [`  attention     ${r.int8_attention ? "INT8 (QK^T and P.V on the INT8 kernels)" : "f32"}`] : []),
    `  machine       load average ${r.load_before ?? "?"} before the timed calls, ${r.load_after ?? "?"} after (this process included); ` +
      `CPU share ${r.cpu_share === null ? "?" : `${Math.round(r.cpu_share * 100)}%`} of ${r.threads} x wall time (below ~90%: other processes took the cores)`,
  ];
  if (!r.output_finite) lines.push("  WARNING: the output has non-finite values");
  if (r.profile) {
    lines.push("", "  time by kernel, per UNet call:");
    lines.push(`  ${"kernel".padEnd(24)} ${"op".padEnd(11)} ${"calls".padStart(6)} ${"ms".padStart(10)} ${"share".padStart(6)}`);
    for (const p of r.profile)
      lines.push(`  ${p.kernel.padEnd(24)} ${p.op.padEnd(11)} ${String(Math.round(p.calls)).padStart(6)} ${p.ms.toFixed(1).padStart(10)} ${(p.share * 100).toFixed(1).padStart(5)}%`);
    const byOp = new Map<string, number>();
    for (const p of r.profile) byOp.set(p.op, (byOp.get(p.op) ?? 0) + p.share);
    const ops = [...byOp].sort((a, b) => b[1] - a[1]).map(([k, s]) => `${k} ${(s * 100).toFixed(1)}%`);
    lines.push(`  by op: ${ops.join(", ")}, outside kernels ${((r.profile_outside_kernels ?? 0) * 100).toFixed(1)}%`);
  }
  return lines.join("\n") + "\n";
}

async function runImage(argv: string[], io: BenchIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...COMMON,
    model: { type: "string", short: "m" },
    steps: { type: "string" },
    guidance: { type: "string", short: "g" },
    prompt: { type: "string", short: "p" },
    scheduler: { type: "string" },
    width: { type: "string", short: "W" },
    height: { type: "string", short: "H" },
    schedule: { type: "string" },
  }, true);
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const v = values as Record<string, unknown>;
  if (v.precision !== undefined && v.schedule !== undefined) throw new UsageError("give --precision or --schedule, not both");
  const c = commonOpts({ ...v, precision: v.precision ?? v.schedule }, true);
  const scheduler = v.scheduler as string | undefined;
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new UsageError(`--scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  const dim = (name: "width" | "height") => {
    if (v[name] === undefined) return undefined;
    const x = intOpt(v[name] as string, name, 0, 8, 8192);
    if (x % 8) throw new UsageError(`--${name} must be a multiple of 8, got ${x}`);
    return x;
  };
  const r = await benchImage({
    model: v.model as string | undefined,
    steps: intOpt(v.steps as string | undefined, "steps", 20, 1, 1000),
    guidance: numOpt(v.guidance as string | undefined, "guidance", 7.5, 0, 100),
    precision: c.precision,
    calibration: c.calibration,
    prompt: v.prompt as string | undefined,
    seed: intOpt(v.seed as string | undefined, "seed", 1, 0, 0xffffffff),
    scheduler,
    width: dim("width"),
    height: dim("height"),
    threads: c.threads,
    memoryBytes: c.memoryBytes,
    simd: c.simd,
    onProgress: progressPrinter(io, !!v.quiet),
  });
  if (v.json) io.out(JSON.stringify(r) + "\n");
  else io.out(formatImage(r));
  return 0;
}

export function formatImage(r: ImageBenchResult): string {
  const steps = r.step_seconds;
  const lines = [
    `stepq bench image: ${r.model}, ${r.schedule}, ${r.width}x${r.height}, ${r.scheduler} ${r.steps} steps (${r.unet_calls} UNet calls), guidance ${r.guidance}`,
    `  load          ${fmtS(r.load_seconds)} s (not in the total)`,
    `  text encoder  ${fmtS(r.text_seconds)} s`,
    `  denoising     ${fmtS(r.denoise_seconds)} s: ${fmtS(r.step_median_seconds)} s/step median, ${fmtS(Math.min(...steps))} min, ${fmtS(Math.max(...steps))} max`,
    `  steps         ${steps.map((s) => fmtS(s)).join(" ")}`,
    `  VAE decode    ${fmtS(r.decode_seconds)} s`,
    `  total         ${fmtS(r.total_seconds)} s`,
    `  memory        engine peak ${mib(r.peak_bytes)} of ${mib(r.capacity_bytes)}; RSS ${mib(r.rss_bytes)}` + (r.max_rss_bytes ? `, peak RSS ${mib(r.max_rss_bytes)}` : ""),
    `  runtime       ${r.runtime} (V8 ${r.v8}), ${r.simd} SIMD, ${r.threads} thread${r.threads > 1 ? "s" : ""}`,
    `  machine       load average ${r.load_before ?? "?"} before, ${r.load_after ?? "?"} after; CPU share ${r.cpu_share === null ? "?" : `${Math.round(r.cpu_share * 100)}%`} of ${r.threads} x wall time`,
  ];
  return lines.join("\n") + "\n";
}

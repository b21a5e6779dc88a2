// FP32 GEMM / linear / conv benchmark against the machine's measured f32 SIMD peak.
// Run: sh bench/gemm.sh [--quick] [--min-time=S] [--only=REGEX] [--wait=S] [--kc=N --mc=N --pb=N]   (builds the kernels, bundles this file, runs it under
// Node with bin/engine-flags.js' flags and --no-liftoff). Prints a table and writes bench/results/gemm.json.
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../src/io/files.ts";
import { Engine, type SimdVariant } from "../src/runtime/engine.ts";
import { prepareLinear, linear, matmul } from "../src/nn/linear.ts";
import { gemmBlocking } from "../src/nn/pack.ts";
import { prepareConv2d, conv2d } from "../src/nn/conv.ts";
import { type Padding4 } from "../src/nn/pack.ts";
import { benchArgs, lcgUniform, timeBest } from "./harness.ts";

const args = benchArgs();
const QUICK = args.has("quick");
const MIN_TIME = args.has("min-time") ? Number(args.get("min-time")) : QUICK ? 0.15 : 0.6; // seconds per measurement
const KC = args.has("kc") ? Number(args.get("kc")) : undefined;
const MC = args.has("mc") ? Number(args.get("mc")) : undefined;
const PB = args.has("pb") ? Number(args.get("pb")) : undefined;

function now() {
  return performance.now() / 1000;
}

/**
 * Best wall time of one call over repeats lasting at least MIN_TIME (after one warm-up call). Wall time:
 * on a machine shared with other jobs (see the load average printed) the 2-thread numbers suffer first.
 */
function timeIt(fn: () => void): number {
  return timeBest(fn, MIN_TIME, 5);
}

/** Busy fraction of all CPUs over ms milliseconds (Linux /proc/stat; null elsewhere). Spins, so only call it while idle. */
function busyFraction(ms: number): number | null {
  const read = () => {
    try {
      const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
      return { idle: f[3] + (f[4] || 0), total: f.reduce((a, b) => a + b, 0) };
    } catch {
      return null;
    }
  };
  const a = read();
  if (!a) return null;
  const t0 = Date.now();
  while (Date.now() - t0 < ms) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const b = read()!;
  return b.total === a.total ? 0 : 1 - (b.idle - a.idle) / (b.total - a.total);
}

/**
 * The machine may be shared with other jobs: before each measurement wait (up to WAIT_S seconds) until
 * the CPUs are idle, so 2-thread numbers are not just measuring someone else's load. Returns whether it was.
 */
const WAIT_S = args.has("wait") ? Number(args.get("wait")) : 60;
function waitIdle(): boolean {
  const t0 = now();
  for (;;) {
    const busy = busyFraction(250);
    if (busy === null || busy < 0.05) return true;
    if (now() - t0 > WAIT_S) return false;
  }
}

function rand(n: number, seed: number): Float32Array {
  return lcgUniform(n, seed);
}

/** Peak GFLOP/s of the register-only loop: short runs (~2 ms), best of many, so other jobs matter less. */
function peak(eng: Engine): number {
  const out = eng.zeros([eng.threads * 4]);
  let iters = 1 << 12;
  eng.run("peak_fma_f32", iters, out.ptr);
  for (;;) {
    const t0 = now();
    eng.run("peak_fma_f32", iters, out.ptr);
    if (now() - t0 > 0.002) break;
    iters *= 2;
  }
  let best = Infinity;
  for (let i = 0; i < (QUICK ? 50 : 200); i++) {
    const t0 = now();
    eng.run("peak_fma_f32", iters, out.ptr);
    best = Math.min(best, now() - t0);
  }
  out.free();
  return (eng.threads * iters * 96) / best / 1e9;
}

interface Shape {
  name: string;
  flops: number;
  /** Allocates the operands and returns the op to time. */
  setup(eng: Engine): () => void;
}

function withBlocking(M: number, N: number, K: number) {
  const b = gemmBlocking(M, N, K);
  return { kc: KC ?? b.kc, mcT: MC ?? b.mcT, pb: PB ?? b.pb };
}

function gemmShape(M: number, K: number, N: number, label?: string): Shape {
  return {
    name: label ?? `gemm ${M}x${K}x${N} (linear, packed)`,
    flops: 2 * M * N * K,
    setup(eng) {
      const w = prepareLinear(eng, rand(N * K, 1), rand(N, 2), N, K);
      const x = eng.fromArray(rand(M * K, 3), [M, K]);
      const y = eng.empty([M, N]);
      const { kc, mcT, pb } = withBlocking(M, N, K);
      if (KC === undefined && MC === undefined && PB === undefined) return () => eng.scope(() => void linear(x, w));
      return () => eng.run("gemm_f32_packed", x.ptr, K, w.packed.ptr, w.bias.ptr, y.ptr, N, M, N, K, kc, mcT, pb);
    },
  };
}

function stridedShape(M: number, K: number, N: number): Shape {
  return {
    name: `gemm_f32 ${M}x${K}x${N} (strided, unpacked B)`,
    flops: 2 * M * N * K,
    setup(eng) {
      const a = eng.fromArray(rand(M * K, 4), [M, K]);
      const b = eng.fromArray(rand(K * N, 5), [K, N]);
      const c = eng.empty([M, N]);
      return () => void matmul(a, b, { out: c });
    },
  };
}

function convShape(B: number, H: number, W: number, cin: number, cout: number, k: number, stride: number, pad: Padding4, label: string): Shape {
  const Ho = Math.floor((H + pad[0] + pad[2] - k) / stride) + 1, Wo = Math.floor((W + pad[1] + pad[3] - k) / stride) + 1;
  return {
    name: label,
    flops: 2 * B * Ho * Wo * cout * k * k * cin,
    setup(eng) {
      const w = prepareConv2d(eng, rand(cout * cin * k * k, 6), rand(cout, 7), { cout, cin, kh: k, kw: k }, { stride });
      const x = eng.fromArray(rand(B * H * W * cin, 8), [B, H, W, cin]);
      const y = eng.empty([B, Ho, Wo, cout]);
      const { kc, mcT, pb } = withBlocking(B * Ho * Wo, cout, k * k * cin);
      if (KC === undefined && MC === undefined && PB === undefined) return () => eng.scope(() => void conv2d(x, w, { padding: pad }));
      return () => eng.run("conv2d_f32", x.ptr, B, H, W, cin, w.packed.ptr, w.bias.ptr, y.ptr, cout, Ho, Wo, cout, k, k, stride, pad[0], pad[1], w.zero.ptr, kc, mcT, pb);
    },
  };
}

const shapes: Shape[] = [
  gemmShape(4096, 320, 320),
  gemmShape(4096, 320, 1280),
  gemmShape(154, 768, 768, "linear 154x768x768 (77 tok x2)"),
  convShape(2, 64, 64, 320, 320, 3, 1, [1, 1, 1, 1], "conv3x3 2x64x64x320->320"),
  convShape(2, 64, 64, 320, 320, 3, 2, [0, 0, 1, 1], "conv3x3 s2 (0,1,0,1) 2x64x64x320->320"),
  stridedShape(4096, 320, 320),
  // the other SD 1.5 UNet levels at batch 2
  convShape(2, 32, 32, 640, 640, 3, 1, [1, 1, 1, 1], "conv3x3 2x32x32x640->640"),
  convShape(2, 16, 16, 1280, 1280, 3, 1, [1, 1, 1, 1], "conv3x3 2x16x16x1280->1280"),
  convShape(2, 8, 8, 2560, 1280, 3, 1, [1, 1, 1, 1], "conv3x3 2x8x8x2560->1280"),
  gemmShape(512, 1280, 10240),
  // shapes of the small UNet the project evaluates (fashion-sd-tiny: 64/128 channels, 8x8 latents)
  convShape(2, 8, 8, 128, 128, 3, 1, [1, 1, 1, 1], "tiny: conv3x3 2x8x8x128->128"),
  convShape(16, 8, 8, 64, 64, 3, 1, [1, 1, 1, 1], "tiny: conv3x3 16x8x8x64->64"),
  gemmShape(128, 128, 1024, "tiny: linear 128x128x1024 (GEGLU proj)"),
];

const ONLY = args.has("only") ? new RegExp(args.get("only")!) : null;
if (ONLY) shapes.splice(0, shapes.length, ...shapes.filter((s) => ONLY.test(s.name)));

interface Row {
  shape: string;
  simd: SimdVariant;
  threads: number;
  ms: number;
  gflops: number;
  pctPeak: number;
  /** whether the CPUs were idle when the measurement started */
  idle: boolean;
}

const results: Row[] = [];
const peaks: Record<string, number> = {};
// all four configurations live at once and are measured back to back per shape, so a burst of other
// jobs on the machine hits them alike; the peak is measured before and after (best kept)
const configs: { simd: SimdVariant; threads: number; eng: Engine }[] = [];
for (const simd of ["baseline", "relaxed"] as SimdVariant[])
  for (const threads of [1, 2]) configs.push({ simd, threads, eng: await Engine.create({ threads, simd, memoryBytes: 512 << 20 }) });
const measurePeaks = () => {
  for (const c of configs) {
    waitIdle();
    peaks[`${c.simd}/${c.threads}`] = Math.max(peaks[`${c.simd}/${c.threads}`] ?? 0, peak(c.eng));
  }
};
measurePeaks();
for (const s of shapes)
  for (const { simd, threads, eng } of configs)
    eng.scope(() => {
      const op = s.setup(eng);
      const idle = waitIdle();
      const dt = timeIt(op);
      results.push({ shape: s.name, simd, threads, ms: dt * 1e3, gflops: s.flops / dt / 1e9, pctPeak: 0, idle });
    });
measurePeaks();
for (const c of configs) c.eng.close();
for (const r of results) r.pctPeak = (100 * r.gflops) / peaks[`relaxed/${r.threads}`];

const os = await import("node:os");
const cpu = os.cpus()[0]?.model ?? "?";
const load = os.loadavg().map((v) => v.toFixed(2)).join(" ");
console.log(`CPU: ${cpu} x${os.cpus().length}, node ${process.version}, load average ${load}${KC !== undefined || MC !== undefined || PB !== undefined ? `, blocking override kc=${KC} mc=${MC} pb=${PB}` : ""}`);
console.log(`peak f32 SIMD (register-only loop, GFLOP/s): relaxed_madd 1T ${peaks["relaxed/1"].toFixed(1)}, 2T ${peaks["relaxed/2"].toFixed(1)} (${(peaks["relaxed/2"] / 2).toFixed(1)}/thread); mul+add 1T ${peaks["baseline/1"].toFixed(1)}, 2T ${peaks["baseline/2"].toFixed(1)}`);
const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);
const pk = (g: number, t: number) => ((100 * g) / peaks[`relaxed/${t}`]).toFixed(0);
console.log(`${pad("shape", 44)}${pad("simd", 10)}${lpad("1T GF/s", 8)}${lpad("%pk", 5)}${lpad("2T GF/s", 9)}${lpad("%pk", 5)}${lpad("2T/1T", 7)}${lpad("1T ms", 9)}${lpad("2T ms", 9)}`);
for (const s of shapes)
  for (const simd of ["baseline", "relaxed"]) {
    const r1 = results.find((r) => r.shape === s.name && r.simd === simd && r.threads === 1)!;
    const r2 = results.find((r) => r.shape === s.name && r.simd === simd && r.threads === 2)!;
    const flag = r1.idle && r2.idle ? " " : "*";
    console.log(
      `${pad(s.name, 43)}${flag}${pad(simd, 10)}${lpad(r1.gflops.toFixed(1), 8)}${lpad(pk(r1.gflops, 1), 5)}${lpad(r2.gflops.toFixed(1), 9)}${lpad(pk(r2.gflops, 2), 5)}${lpad((r2.gflops / r1.gflops).toFixed(2), 7)}${lpad(r1.ms.toFixed(2), 9)}${lpad(r2.ms.toFixed(2), 9)}`,
    );
  }
console.log("%pk = % of the relaxed_madd register-only peak measured in this run for the same thread count.");
console.log(`* = the CPUs were not idle when a measurement of that row started (other jobs; waited up to ${WAIT_S} s, --wait=S)`);
console.log("GF/s: flops of the whole op / best wall time over repeats (one op call = linear() / conv2d() / matmul() incl. output allocation).");

const dir = path.resolve("bench/results");
fs.mkdirSync(dir, { recursive: true });
writeFileAtomic(path.join(dir, "gemm.json"), JSON.stringify({ date: new Date().toISOString(), cpu, node: process.version, loadAverage: os.loadavg(), peaks, results, blockingOverride: { kc: KC, mc: MC } }, null, 2));
console.log(`wrote ${path.join(dir, "gemm.json")}`);

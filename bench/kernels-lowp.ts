// INT8 and emulated-BF16 GEMM / conv benchmark (src/nn/int8.ts, src/nn/bf16.ts), against register-only peak loops measured
// in the same run (peak_dot_i8: relaxed dot or the baseline i16-dot sequence; peak_fma_f32), and the FP32
// kernels on the same shapes. 1 vs 2 threads, baseline vs relaxed build.
// Run: sh bench/lowp.sh [--quick] [--threads=1,2] [--only=substring] [--prec=int8,bf16,f32] [--simd=relaxed,baseline] [--kc=N --mc=N --pb=N]
// Prints a table and writes bench/results/lowp.json.
//   "op" times are the whole op (INT8: activation quantisation + kernel; output allocation);
//   "kernel" times run only the GEMM/conv kernel (INT8 on pre-quantised activations; the BF16 kernels
//   round activations while packing them, so for BF16 op = kernel + allocation).
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../src/io/files.ts";
import { Engine, type SimdVariant } from "../src/runtime/engine.ts";
import { prepareLinear, linear } from "../src/nn/linear.ts";
import { prepareConv2d, conv2d } from "../src/nn/conv.ts";
import { type Padding4 } from "../src/nn/pack.ts";
import { actParamsFromRange, quantizeActivations } from "../src/nn/quant.ts";
import { bf16Blocking, conv2dBf16, linearBf16, prepareConv2dBf16, prepareLinearBf16 } from "../src/nn/bf16.ts";
import { PEAK_DOT_STRIDE, INT8_FLAG_FUSED, INT8_FLAG_I16, INT8_FLAG_SPLAT_LOAD } from "../assembly/abi.ts";
import { conv2dInt8, int8Blocking, int8Capabilities, preferFusedDot, linearInt8, prepareConv2dInt8, prepareLinearInt8 } from "../src/nn/int8.ts";
import { benchArgs, lcgUniform, timeBest } from "./harness.ts";

const args = benchArgs();
const QUICK = args.has("quick");
const MIN_TIME = QUICK ? 0.15 : 0.6;
const THREADS = (args.get("threads") ?? "1,2").split(",").map(Number);
const ONLY = args.get("only");
const PRECS = (args.get("prec") ?? "int8,int8a8w7,int8u8,bf16,f32").split(",") as Prec[];
const SIMDS = (args.get("simd") ?? "relaxed,baseline").split(",") as SimdVariant[];
const KC = args.has("kc") ? Number(args.get("kc")) : 0;
const MC = args.has("mc") ? Number(args.get("mc")) : 0;
/** Panels per panel block (0: the kernels' default). */
const PB = args.has("pb") ? Number(args.get("pb")) : 0;
/** INT8 7-bit dot sequence on the relaxed build: fused, split, or auto (what the ops pick: preferFusedDot). */
const DOT = (args.get("dot") ?? "auto") as "auto" | "fused" | "split";
const now = () => performance.now() / 1000;

function timeIt(fn: () => void): number {
  return timeBest(fn, MIN_TIME, 3);
}

function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  return lcgUniform(n, seed, lo, hi);
}

/** Ops per second of a register-only loop kernel(iters, out) doing opsPerIter ops per iteration per thread. */
function peak(eng: Engine, kernel: string, opsPerIter: number, ...extra: number[]): number {
  const out = eng.zeros([(eng.threads * PEAK_DOT_STRIDE) / 4]);
  let iters = 1 << 16;
  for (;;) {
    const t0 = now();
    eng.run(kernel, iters, out.ptr, ...extra);
    if (now() - t0 > 0.05) break;
    iters *= 2;
  }
  const dt = timeIt(() => eng.run(kernel, iters, out.ptr, ...extra));
  out.free();
  return (eng.threads * iters * opsPerIter) / dt / 1e9;
}

type Prec = "int8" | "int8u8" | "int8a8w7" | "bf16" | "f32";
interface Case {
  name: string;
  ops: number;
  /** Returns [op, kernel-only] closures for a precision. */
  setup(eng: Engine, prec: Prec): { op: () => void; kernel: () => void };
}

const ACT = actParamsFromRange(-1, 1);
const ACT_U8 = actParamsFromRange(-1, 1, 255);
const ACT_U8W7 = actParamsFromRange(-1, 1, 255, 63);
const actFor = (prec: Prec) => (prec === "int8u8" ? ACT_U8 : prec === "int8a8w7" ? ACT_U8W7 : ACT);
/** Kernel flags as the op picks them: i16 path for u8 activations or the baseline build, else the --dot sequence. */
const flagsFor = (eng: Engine, prec: Prec = "int8", i16Path = false) =>
  eng.simd === "relaxed" && !i16Path
    ? (prec === "int8u8" || DOT === "fused" || (DOT === "auto" && preferFusedDot(eng)) ? INT8_FLAG_FUSED : 0) | (int8Capabilities(eng).splatLoads ? INT8_FLAG_SPLAT_LOAD : 0)
    : INT8_FLAG_I16;

/** Blocking (defaults or --kc/--mc) and a packing scratch buffer for a direct INT8 kernel call. */
function int8Setup(eng: Engine, M: number, N: number, K: number) {
  const d = int8Blocking(M, N, K);
  const kc = KC || d.kc, mcT = MC || d.mcT;
  const stride = (mcT * 4 * kc + 63) & ~63;
  const scratch = eng.empty([stride * eng.threads], "u8");
  return { kc, mcT, scratch: scratch.ptr, stride };
}
const int8Opts = () => ({ kc: KC || undefined, mcT: MC || undefined, pb: PB || undefined, dot: DOT });
const bf16Opts = () => ({ kc: KC || undefined, mcT: MC || undefined, pb: PB || undefined });
function bf16Setup(eng: Engine, M: number, N: number, K: number) {
  const d = bf16Blocking(M, N, K);
  const kc = KC || d.kc, mcT = MC || d.mcT;
  const stride = (mcT * 16 * kc + 63) & ~63;
  const scratch = eng.empty([stride * eng.threads], "u8");
  return { kc, mcT, scratch: scratch.ptr, stride };
}

function gemmCase(M: number, K: number, N: number): Case {
  return {
    name: `gemm M=${M} K=${K} N=${N}`,
    ops: 2 * M * N * K,
    setup(eng, prec) {
      const xf = rand(M * K, 3);
      const x = eng.fromArray(xf, [M, K]);
      const w = rand(N * K, 1, -0.1, 0.1), b = rand(N, 2);
      const y = eng.empty([M, N]);
      if (prec.startsWith("int8")) {
        const lw = prepareLinearInt8(eng, w, b, N, K, actFor(prec));
        const xq = quantizeActivations(eng, x, actFor(prec), lw.kp);
        const bl = int8Setup(eng, M, N, lw.kp);
        return {
          op: () => eng.scope(() => void linearInt8(x, lw, int8Opts())),
          kernel: () => eng.run("gemm_int8_packed", xq.ptr, lw.kp, lw.packed.ptr, lw.corr.ptr, lw.scale.ptr, lw.bias.ptr, y.ptr, N, M, N, lw.kp, bl.kc, bl.mcT, PB, flagsFor(eng, prec, lw.i16Path), bl.scratch, bl.stride),
        };
      }
      if (prec === "bf16") {
        const lw = prepareLinearBf16(eng, w, b, N, K);
        const bl = bf16Setup(eng, M, N, K);
        return {
          op: () => eng.scope(() => void linearBf16(x, lw, bf16Opts())),
          kernel: () => eng.run("gemm_bf16_packed", x.ptr, K, lw.packed.ptr, lw.bias.ptr, y.ptr, N, M, N, K, bl.kc, bl.mcT, PB, bl.scratch, bl.stride),
        };
      }
      const lw = prepareLinear(eng, w, b, N, K);
      return {
        op: () => eng.scope(() => void linear(x, lw)),
        kernel: () => eng.run("gemm_f32_packed", x.ptr, K, lw.packed.ptr, lw.bias.ptr, y.ptr, N, M, N, K, 0, 0, 0),
      };
    },
  };
}

function convCase(B: number, H: number, W: number, cin: number, cout: number, k: number, stride: number, pad: Padding4): Case {
  const Ho = Math.floor((H + pad[0] + pad[2] - k) / stride) + 1, Wo = Math.floor((W + pad[1] + pad[3] - k) / stride) + 1;
  return {
    name: `conv${k}x${k} ${B}x${H}x${W}x${cin}->${cout} K=${k * k * cin}`,
    ops: 2 * B * Ho * Wo * cout * k * k * cin,
    setup(eng, prec) {
      const x = eng.fromArray(rand(B * H * W * cin, 8), [B, H, W, cin]);
      const w = rand(cout * cin * k * k, 6, -0.05, 0.05), b = rand(cout, 7);
      const y = eng.empty([B, Ho, Wo, cout]);
      const shape = { cout, cin, kh: k, kw: k };
      if (prec.startsWith("int8")) {
        const cw = prepareConv2dInt8(eng, w, b, shape, { stride, padding: pad }, actFor(prec));
        const xq = quantizeActivations(eng, x, actFor(prec), cw.cp);
        const bl = int8Setup(eng, B * Ho * Wo, cout, k * k * cw.cp);
        return {
          op: () => eng.scope(() => void conv2dInt8(x, cw, int8Opts())),
          kernel: () => eng.run("conv2d_int8", xq.ptr, B, H, W, cw.cp, cw.packed.ptr, cw.corr.ptr, cw.scale.ptr, cw.bias.ptr, y.ptr, cout, Ho, Wo, cout, k, k, stride, pad[0], pad[1], cw.padBuf.ptr, bl.kc, bl.mcT, PB, flagsFor(eng, prec, cw.i16Path), bl.scratch, bl.stride),
        };
      }
      if (prec === "bf16") {
        const cw = prepareConv2dBf16(eng, w, b, shape, { stride, padding: pad });
        const bl = bf16Setup(eng, B * Ho * Wo, cout, k * k * cin);
        return {
          op: () => eng.scope(() => void conv2dBf16(x, cw, bf16Opts())),
          kernel: () => eng.run("conv2d_bf16", x.ptr, B, H, W, cin, cw.packed.ptr, cw.bias.ptr, y.ptr, cout, Ho, Wo, cout, k, k, stride, pad[0], pad[1], cw.zero.ptr, bl.kc, bl.mcT, PB, bl.scratch, bl.stride),
        };
      }
      const cw = prepareConv2d(eng, w, b, shape, { stride });
      return { op: () => eng.scope(() => void conv2d(x, cw, { padding: pad })), kernel: () => eng.scope(() => void conv2d(x, cw, { padding: pad })) };
    },
  };
}

const cases: Case[] = [
  gemmCase(4096, 320, 320),
  convCase(1, 64, 64, 320, 320, 3, 1, [1, 1, 1, 1]),
  gemmCase(4096, 320, 1280),
  gemmCase(154, 768, 320),
  // the other SD 1.5 UNet levels at batch 2 (32x32x640, 16x16x1280, 8x8 with a 2560-channel skip concat)
  convCase(2, 32, 32, 640, 640, 3, 1, [1, 1, 1, 1]),
  convCase(2, 16, 16, 1280, 1280, 3, 1, [1, 1, 1, 1]),
  convCase(2, 8, 8, 2560, 1280, 3, 1, [1, 1, 1, 1]),
  gemmCase(512, 1280, 10240),
  gemmCase(2048, 640, 640),
].filter((c) => !ONLY || c.name.includes(ONLY));

interface Row { case: string; prec: Prec; simd: SimdVariant; threads: number; opMs: number; kernelMs: number; gopsOp: number; gopsKernel: number; pctPeak?: number }
const rows: Row[] = [];
const peaks: Record<string, number> = {};
for (const simd of SIMDS)
  for (const threads of THREADS) {
    const eng = await Engine.create({ threads, simd, memoryBytes: 512 << 20 });
    const key = `${simd}/${threads}`;
    // peaks are measured before and after the cases and the higher kept (other load only lowers them)
    const measurePeaks = () => {
      const put = (k: string, v: number) => (peaks[k] = Math.max(peaks[k] ?? 0, v));
      if (simd === "relaxed") {
        put(`int8 fused dot ${key}`, peak(eng, "peak_dot_i8", 384, 0));
        put(`int8 split dot ${key}`, peak(eng, "peak_dot_i8", 384, 1));
        put(`int8 fused chain ${key}`, peak(eng, "peak_dot_i8", 384, 4));
        put(`int8 split chain ${key}`, peak(eng, "peak_dot_i8", 384, 5));
      }
      put(`int8 i16 dot ${key}`, peak(eng, "peak_dot_i8", 384, 2));
      // the reference peak: the best throughput loop (the chain loops measure latency)
      put(`int8 ${key}`, Math.max(...Object.entries(peaks).filter(([k]) => k.startsWith("int8 ") && k.endsWith(key) && k.includes(" dot ")).map(([, v]) => v)));
      put(`f32 ${key}`, peak(eng, "peak_fma_f32", 96));
    };
    measurePeaks();
    for (const c of cases)
      for (const prec of PRECS) {
        if (prec === "f32" && simd === "baseline") continue;
        eng.scope(() => {
          const { op, kernel } = c.setup(eng, prec);
          const tk = timeIt(kernel);
          const to = timeIt(op);
          rows.push({ case: c.name, prec, simd, threads, opMs: to * 1e3, kernelMs: tk * 1e3, gopsOp: c.ops / to / 1e9, gopsKernel: c.ops / tk / 1e9 });
        });
      }
    measurePeaks();
    eng.close();
  }

for (const r of rows) r.pctPeak = (100 * r.gopsKernel) / peaks[`${r.prec.startsWith("int8") ? "int8" : "f32"} ${r.simd}/${r.threads}`];
{
  const e = await Engine.create({ threads: 1, simd: "relaxed", memoryBytes: 16 << 20 });
  console.log(`int8 dot capabilities (relaxed, 1 thread): ${JSON.stringify(int8Capabilities(e))}`);
  e.close();
}
const os = await import("node:os");
const cpu = os.cpus()[0]?.model ?? "?";
const load = os.loadavg().map((v) => v.toFixed(2)).join(" ");
console.log(`CPU: ${cpu} x${os.cpus().length}, node ${process.version}, load average ${load}${KC || MC ? `, blocking kc=${KC} mc=${MC}` : ""}`);
console.log("register-only peaks (G ops/s; int8: 2 ops per multiply-add; f32: GFLOP/s):");
for (const [k, v] of Object.entries(peaks)) console.log(`  ${k.padEnd(20)} ${v.toFixed(1)}`);
const lp = (s: string, n: number) => s.padStart(n);
console.log(`${"case".padEnd(46)}${"prec".padEnd(8)}${"simd".padEnd(9)}${lp("T", 2)}${lp("kern ms", 9)}${lp("Gops", 7)}${lp("%pk", 5)}${lp("op ms", 9)}${lp("op Gops", 8)}${lp("int8 x", 8)}`);
for (const r of rows) {
  const i8 = rows.find((q) => q.case === r.case && q.simd === r.simd && q.threads === r.threads && q.prec === "int8");
  console.log(`${r.case.padEnd(46)}${r.prec.padEnd(8)}${r.simd.padEnd(9)}${lp(String(r.threads), 2)}${lp(r.kernelMs.toFixed(2), 9)}${lp(r.gopsKernel.toFixed(1), 7)}${lp((r.pctPeak ?? 0).toFixed(0), 5)}${lp(r.opMs.toFixed(2), 9)}${lp(r.gopsOp.toFixed(1), 8)}${lp(r.prec === "int8" || !i8 ? "" : (r.opMs / i8.opMs).toFixed(2), 8)}`);
}
console.log(`int8 = 7-bit activations (relaxed build: dot=${DOT}), int8a8w7 = 8-bit activations x 7-bit weights (relaxed dot where the probe proves it exact), int8u8 = 8-bit activations x int8 weights (fused dot where exact (AVX-VNNI), else i16)`);
console.log("%pk: kernel vs the same build and thread count's register-only peak (int8: best peak_dot_i8 variant; bf16/f32: peak_fma_f32). int8 x: op time / INT8 op time.");
// Accuracy of each precision on one linear layer (Gaussian activations, weights ~ N(0, 1/K)), against an
// f64 product: what the 7-bit activation range costs compared with full u8.
function gauss(n: number, seed: number, std: number): Float32Array {
  const u = rand(2 * n, seed, 0, 1);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = std * Math.sqrt(-2 * Math.log(1 - u[2 * i])) * Math.cos(2 * Math.PI * u[2 * i + 1]);
  return a;
}
const accuracy: Record<string, number> = {};
{
  const eng = await Engine.create({ threads: 1, simd: "relaxed", memoryBytes: 64 << 20 });
  const M = 256, K = 320, N = 320;
  const xf = gauss(M * K, 11, 1), wf = gauss(N * K, 12, 1 / Math.sqrt(K));
  let lo = Infinity, hi = -Infinity;
  for (const v of xf) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  const ref = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += xf[m * K + k] * wf[n * K + k];
      ref[m * N + n] = s;
    }
  const relRms = (y: Float32Array) => {
    let e = 0, r = 0;
    for (let i = 0; i < y.length; i++) (e += (y[i] - ref[i]) ** 2), (r += ref[i] ** 2);
    return Math.sqrt(e / r);
  };
  const x = eng.fromArray(xf, [M, K]);
  accuracy["bf16"] = relRms(linearBf16(x, prepareLinearBf16(eng, wf, null, N, K)).f32());
  accuracy["int8, 7-bit activations, int8 weights"] = relRms(linearInt8(x, prepareLinearInt8(eng, wf, null, N, K, actParamsFromRange(lo, hi, 127))).f32());
  accuracy["int8, u8 activations, int8 weights"] = relRms(linearInt8(x, prepareLinearInt8(eng, wf, null, N, K, actParamsFromRange(lo, hi, 255))).f32());
  accuracy["int8, u8 activations, 7-bit weights (default)"] = relRms(linearInt8(x, prepareLinearInt8(eng, wf, null, N, K, actParamsFromRange(lo, hi, 255, 63))).f32());
  // The same three schemes in plain TS (quantise, then an exact integer product), as a check on the rows above.
  const quantRef = (actQmax: number, wQmax: number) => {
    const a = actParamsFromRange(lo, hi, actQmax);
    const qx = xf.map((v) => Math.min(actQmax, Math.max(0, Math.round(v / a.scale) + a.zeroPoint)));
    const y = new Float32Array(M * N);
    for (let n = 0; n < N; n++) {
      let mx = 0;
      for (let k = 0; k < K; k++) mx = Math.max(mx, Math.abs(wf[n * K + k]));
      const sw = mx / wQmax;
      const qw = Array.from({ length: K }, (_, k) => Math.round(wf[n * K + k] / sw));
      for (let m = 0; m < M; m++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += (qx[m * K + k] - a.zeroPoint) * qw[k];
        y[m * N + n] = acc * a.scale * sw;
      }
    }
    return relRms(y);
  };
  accuracy["(ref) u8 activations, 7-bit weights"] = quantRef(255, 63);
  accuracy["(ref) 7-bit activations, 8-bit weights"] = quantRef(127, 127);
  accuracy["(ref) u8 activations, 8-bit weights"] = quantRef(255, 127);
  eng.close();
  console.log(`accuracy on a ${M}x${K}x${N} linear, x ~ N(0,1) (per-tensor range [${lo.toFixed(2)}, ${hi.toFixed(2)}]), w ~ N(0,1/K); relative RMS error vs f64:`);
  for (const [k, v] of Object.entries(accuracy)) console.log(`  ${k.padEnd(40)} ${(v * 100).toFixed(3)} %`);
}

const dir = path.resolve("bench/results");
fs.mkdirSync(dir, { recursive: true });
writeFileAtomic(path.join(dir, "lowp.json"), JSON.stringify({ date: new Date().toISOString(), cpu, cores: os.cpus().length, loadAverage: os.loadavg(), node: process.version, blocking: { kc: KC, mc: MC }, peaks, rows, accuracy }, null, 2));
console.log(`wrote ${path.join(dir, "lowp.json")}`);

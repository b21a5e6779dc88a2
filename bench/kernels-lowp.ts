// INT8 and emulated-BF16 GEMM / conv benchmark (src/nn/lowp.ts), against register-only peak loops measured
// in the same run (peak_dot_i8: relaxed dot or the baseline i16-dot sequence; peak_fma_f32), and the FP32
// kernels on the same shapes. 1 vs 2 threads, baseline vs relaxed build.
// Run: sh bench/lowp.sh [--quick] [--threads=1,2] [--only=substring] [--prec=int8,bf16,f32] [--simd=relaxed,baseline] [--kc=N --mc=N]
// Prints a table and writes bench/results/lowp.json.
//   "op" times are the whole op (INT8: activation quantisation + kernel; output allocation);
//   "kernel" times run only the GEMM/conv kernel (INT8 on pre-quantised activations; the BF16 kernels
//   round activations while packing them, so for BF16 op = kernel + allocation).
import * as fs from "node:fs";
import * as path from "node:path";
import { Engine, type SimdVariant } from "../src/runtime/engine.ts";
import { prepareLinear, linear } from "../src/nn/linear.ts";
import { prepareConv2d, conv2d, type Padding4 } from "../src/nn/conv.ts";
import { actParamsFromRange, quantizeActivations } from "../src/nn/quant.ts";
import { bf16Blocking, conv2dBf16, conv2dInt8, int8Blocking, linearBf16, linearInt8, prepareConv2dBf16, prepareConv2dInt8, prepareLinearBf16, prepareLinearInt8 } from "../src/nn/lowp.ts";

const args = new Map(process.argv.slice(2).map((a) => { const [k, v] = a.replace(/^--/, "").split("="); return [k, v ?? "1"] as [string, string]; }));
const QUICK = args.has("quick");
const MIN_TIME = QUICK ? 0.15 : 0.6;
const THREADS = (args.get("threads") ?? "1,2").split(",").map(Number);
const ONLY = args.get("only");
const PRECS = (args.get("prec") ?? "int8,bf16,f32").split(",") as Prec[];
const SIMDS = (args.get("simd") ?? "relaxed,baseline").split(",") as SimdVariant[];
const KC = args.has("kc") ? Number(args.get("kc")) : 0;
const MC = args.has("mc") ? Number(args.get("mc")) : 0;
const now = () => performance.now() / 1000;

function timeIt(fn: () => void): number {
  fn();
  let best = Infinity, total = 0, n = 0;
  while (total < MIN_TIME || n < 3) {
    const t0 = now();
    fn();
    const dt = now() - t0;
    best = Math.min(best, dt);
    total += dt;
    n++;
  }
  return best;
}

function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = lo + (hi - lo) * (s / 4294967296);
  }
  return a;
}

/** Ops per second of a register-only loop kernel(iters, out) doing opsPerIter ops per iteration per thread. */
function peak(eng: Engine, kernel: string, opsPerIter: number, ...extra: number[]): number {
  const out = eng.zeros([eng.threads * 4]);
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

type Prec = "int8" | "bf16" | "f32";
interface Case {
  name: string;
  ops: number;
  /** Returns [op, kernel-only] closures for a precision. */
  setup(eng: Engine, prec: Prec): { op: () => void; kernel: () => void };
}

const ACT = actParamsFromRange(-1, 1);
const flagsFor = (eng: Engine) => (eng.simd === "relaxed" ? 0 : 1);

/** Blocking (defaults or --kc/--mc) and a packing scratch buffer for a direct INT8 kernel call. */
function int8Setup(eng: Engine, M: number, N: number, K: number) {
  const d = int8Blocking(M, N, K);
  const kc = KC || d.kc, mcT = MC || d.mcT;
  const stride = (mcT * 4 * kc + 63) & ~63;
  const scratch = eng.empty([stride * eng.threads], "u8");
  return { kc, mcT, scratch: scratch.ptr, stride };
}
const int8Opts = () => (KC || MC ? { kc: KC || undefined, mcT: MC || undefined } : {});
const bf16Opts = () => (KC || MC ? { kc: KC || undefined, mcT: MC || undefined } : {});
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
      if (prec === "int8") {
        const lw = prepareLinearInt8(eng, w, b, N, K, ACT);
        const xq = quantizeActivations(eng, x, ACT, lw.kp);
        const bl = int8Setup(eng, M, N, lw.kp);
        return {
          op: () => eng.scope(() => void linearInt8(x, lw, int8Opts())),
          kernel: () => eng.run("gemm_int8_packed", xq.ptr, lw.kp, lw.packed.ptr, lw.corr.ptr, lw.scale.ptr, lw.bias.ptr, y.ptr, N, M, N, lw.kp, bl.kc, bl.mcT, flagsFor(eng), bl.scratch, bl.stride),
        };
      }
      if (prec === "bf16") {
        const lw = prepareLinearBf16(eng, w, b, N, K);
        const bl = bf16Setup(eng, M, N, K);
        return {
          op: () => eng.scope(() => void linearBf16(x, lw, bf16Opts())),
          kernel: () => eng.run("gemm_bf16_packed", x.ptr, K, lw.packed.ptr, lw.bias.ptr, y.ptr, N, M, N, K, bl.kc, bl.mcT, bl.scratch, bl.stride),
        };
      }
      const lw = prepareLinear(eng, w, b, N, K);
      return {
        op: () => eng.scope(() => void linear(x, lw)),
        kernel: () => eng.run("gemm_f32_packed", x.ptr, K, lw.packed.ptr, lw.bias.ptr, y.ptr, N, M, N, K, 0, 0),
      };
    },
  };
}

function convCase(B: number, H: number, W: number, cin: number, cout: number, k: number, stride: number, pad: Padding4): Case {
  const Ho = Math.floor((H + pad[0] + pad[2] - k) / stride) + 1, Wo = Math.floor((W + pad[1] + pad[3] - k) / stride) + 1;
  return {
    name: `conv${k}x${k} s${stride} ${B}x${H}x${W}x${cin}->${cout} (M=${B * Ho * Wo} K=${k * k * cin} N=${cout})`,
    ops: 2 * B * Ho * Wo * cout * k * k * cin,
    setup(eng, prec) {
      const x = eng.fromArray(rand(B * H * W * cin, 8), [B, H, W, cin]);
      const w = rand(cout * cin * k * k, 6, -0.05, 0.05), b = rand(cout, 7);
      const y = eng.empty([B, Ho, Wo, cout]);
      const shape = { cout, cin, kh: k, kw: k };
      if (prec === "int8") {
        const cw = prepareConv2dInt8(eng, w, b, shape, { stride, padding: pad }, ACT);
        const xq = quantizeActivations(eng, x, ACT, cw.cp);
        const bl = int8Setup(eng, B * Ho * Wo, cout, k * k * cw.cp);
        return {
          op: () => eng.scope(() => void conv2dInt8(x, cw, int8Opts())),
          kernel: () => eng.run("conv2d_int8", xq.ptr, B, H, W, cw.cp, cw.packed.ptr, cw.corr.ptr, cw.scale.ptr, cw.bias.ptr, y.ptr, cout, Ho, Wo, cout, k, k, stride, pad[0], pad[1], cw.padBuf.ptr, bl.kc, bl.mcT, flagsFor(eng), bl.scratch, bl.stride),
        };
      }
      if (prec === "bf16") {
        const cw = prepareConv2dBf16(eng, w, b, shape, { stride, padding: pad });
        const bl = bf16Setup(eng, B * Ho * Wo, cout, k * k * cin);
        return {
          op: () => eng.scope(() => void conv2dBf16(x, cw, bf16Opts())),
          kernel: () => eng.run("conv2d_bf16", x.ptr, B, H, W, cin, cw.packed.ptr, cw.bias.ptr, y.ptr, cout, Ho, Wo, cout, k, k, stride, pad[0], pad[1], cw.zero.ptr, bl.kc, bl.mcT, bl.scratch, bl.stride),
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
].filter((c) => !ONLY || c.name.includes(ONLY));

interface Row { case: string; prec: Prec; simd: SimdVariant; threads: number; opMs: number; kernelMs: number; gopsOp: number; gopsKernel: number; pctPeak?: number }
const rows: Row[] = [];
const peaks: Record<string, number> = {};
for (const simd of SIMDS)
  for (const threads of THREADS) {
    const eng = await Engine.create({ threads, simd, memoryBytes: 512 << 20 });
    const key = `${simd}/${threads}`;
    if (simd === "relaxed") {
      peaks[`int8 relaxed_dot_add ${key}`] = peak(eng, "peak_dot_i8", 384, 0);
      peaks[`int8 split dot ${key}`] = peak(eng, "peak_dot_i8", 384, 1);
    }
    peaks[`int8 i16 dot ${key}`] = peak(eng, "peak_dot_i8", 384, 2);
    peaks[`int8 ${key}`] = Math.max(...Object.entries(peaks).filter(([k]) => k.startsWith("int8 ") && k.endsWith(key)).map(([, v]) => v));
    peaks[`f32 ${key}`] = peak(eng, "peak_fma_f32", 96);
    for (const c of cases)
      for (const prec of PRECS) {
        if (prec === "f32" && simd === "baseline") continue;
        eng.scope(() => {
          const { op, kernel } = c.setup(eng, prec);
          const tk = timeIt(kernel);
          const to = timeIt(op);
          const pk = prec === "int8" ? peaks[`int8 ${key}`] : peaks[`f32 ${key}`];
          rows.push({ case: c.name, prec, simd, threads, opMs: to * 1e3, kernelMs: tk * 1e3, gopsOp: c.ops / to / 1e9, gopsKernel: c.ops / tk / 1e9, pctPeak: (100 * c.ops) / tk / 1e9 / pk });
        });
      }
    eng.close();
  }

const cpu = (await import("node:os")).cpus()[0]?.model ?? "?";
console.log(`CPU: ${cpu}, node ${process.version}${KC || MC ? `, blocking kc=${KC} mc=${MC}` : ""}`);
console.log("register-only peaks (G ops/s; int8: 2 ops per multiply-add; f32: GFLOP/s):");
for (const [k, v] of Object.entries(peaks)) console.log(`  ${k.padEnd(20)} ${v.toFixed(1)}`);
const lp = (s: string, n: number) => s.padStart(n);
console.log(`${"case".padEnd(46)}${"prec".padEnd(6)}${"simd".padEnd(9)}${lp("T", 2)}${lp("kern ms", 9)}${lp("Gops", 7)}${lp("%pk", 5)}${lp("op ms", 9)}${lp("op Gops", 8)}${lp("int8 x", 8)}`);
for (const r of rows) {
  const i8 = rows.find((q) => q.case === r.case && q.simd === r.simd && q.threads === r.threads && q.prec === "int8");
  console.log(`${r.case.padEnd(46)}${r.prec.padEnd(6)}${r.simd.padEnd(9)}${lp(String(r.threads), 2)}${lp(r.kernelMs.toFixed(2), 9)}${lp(r.gopsKernel.toFixed(1), 7)}${lp((r.pctPeak ?? 0).toFixed(0), 5)}${lp(r.opMs.toFixed(2), 9)}${lp(r.gopsOp.toFixed(1), 8)}${lp(r.prec === "int8" || !i8 ? "" : (r.opMs / i8.opMs).toFixed(2), 8)}`);
}
console.log("%pk: kernel vs the same build's register-only peak (int8: peak_dot_i8; bf16/f32: peak_fma_f32). int8 x: op time / int8 op time.");
const dir = path.resolve("bench/results");
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(dir, "lowp.json"), JSON.stringify({ date: new Date().toISOString(), cpu, node: process.version, blocking: { kc: KC, mc: MC }, peaks, rows }, null, 2));
console.log(`wrote ${path.join(dir, "lowp.json")}`);

// Backward GEMM / conv benchmark: dX and dW of linear and conv2d (src/nn/backward) next to the forward op
// on the same shape (same flop count 2*M*N*K each), and the QAT student step's extra passes.
// Run: sh bench/backward-dense.sh [--quick] [--only=REGEX] [--mc=N] [--simd=relaxed|baseline|both] [--wait=S] [--no-qat]
// (builds the kernels, bundles this file, runs it under Node with bin/engine-flags.js' flags and --no-liftoff).
// Prints a table and writes bench/results/backward-dense.json.
import * as fs from "node:fs";
import * as path from "node:path";
import * as os from "node:os";
import { Engine, type SimdVariant } from "../src/runtime/engine.ts";
import { prepareLinear, linear } from "../src/nn/linear.ts";
import { prepareConv2d, conv2d } from "../src/nn/conv.ts";
import { type Padding4 } from "../src/nn/pack.ts";
import { conv2dBackwardInput, conv2dBackwardWeight, type ConvBackwardGeometry } from "../src/nn/backward/conv.ts";
import { linearBackwardInput, linearBackwardWeight } from "../src/nn/backward/linear.ts";
import {
  createFakeQuantConv2d, createFakeQuantLinear, fakeQuantConv2d, fakeQuantConv2dBackward, fakeQuantLinear, fakeQuantLinearBackward,
  updateFakeQuantConv2d, updateFakeQuantLinear, weightScalesOf,
} from "../src/nn/backward/fakequant.ts";
import { actParamsFromRange } from "../src/nn/quant.ts";
import { benchArgs, lcgUniform, timeBest } from "./harness.ts";

const args = benchArgs();
const QUICK = args.has("quick");
const MIN_TIME = QUICK ? 0.15 : 0.5;
const MC = args.has("mc") ? Number(args.get("mc")) : undefined;
const SIMDS: SimdVariant[] = args.get("simd") === "both" ? ["baseline", "relaxed"] : [(args.get("simd") as SimdVariant) ?? "relaxed"];
const WAIT_S = args.has("wait") ? Number(args.get("wait")) : 30;

const now = () => performance.now() / 1000;
function timeIt(fn: () => void): number {
  return timeBest(fn, MIN_TIME, 5);
}
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
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const b = read()!;
  return b.total === a.total ? 0 : 1 - (b.idle - a.idle) / (b.total - a.total);
}
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

interface Shape {
  name: string;
  flops: number;
  /** forward, dX, dW (+ db) ops on the same operands */
  setup(eng: Engine): { fwd: () => void; dx: () => void; dw: () => void };
}

function linearShape(M: number, K: number, N: number, label?: string): Shape {
  return {
    name: label ?? `linear ${M}x${K}x${N}`,
    flops: 2 * M * N * K,
    setup(eng) {
      const wf = rand(N * K, 1);
      const w = prepareLinear(eng, wf, rand(N, 2), N, K);
      const wt = eng.fromArray(wf, [N, K]);
      const x = eng.fromArray(rand(M * K, 3), [M, K]);
      const dy = eng.fromArray(rand(M * N, 4), [M, N]);
      const dx = eng.empty([M, K]), dw = eng.empty([N, K]), db = eng.empty([N]);
      return {
        fwd: () => eng.scope(() => void linear(x, w)),
        dx: () => void linearBackwardInput(dy, wt, N, K, { out: dx }),
        dw: () => linearBackwardWeight(x, dy, dw, db, { mc: MC }),
      };
    },
  };
}

function convShape(B: number, H: number, W: number, cin: number, cout: number, k: number, stride: number, pad: Padding4, label: string): Shape {
  const Ho = Math.floor((H + pad[0] + pad[2] - k) / stride) + 1, Wo = Math.floor((W + pad[1] + pad[3] - k) / stride) + 1;
  return {
    name: label,
    flops: 2 * B * Ho * Wo * cout * k * k * cin,
    setup(eng) {
      const wf = rand(cout * cin * k * k, 6);
      const w = prepareConv2d(eng, wf, rand(cout, 7), { cout, cin, kh: k, kw: k }, { stride });
      const wt = eng.fromArray(wf, [cout, cin, k, k]);
      const x = eng.fromArray(rand(B * H * W * cin, 8), [B, H, W, cin]);
      const dy = eng.fromArray(rand(B * Ho * Wo * cout, 9), [B, Ho, Wo, cout]);
      const g: ConvBackwardGeometry = { cout, cin, kh: k, kw: k, stride, padding: pad };
      const dx = eng.empty(x.shape), dw = eng.empty([cout, cin, k, k]), db = eng.empty([cout]);
      return {
        fwd: () => eng.scope(() => void conv2d(x, w, { padding: pad })),
        dx: () => void conv2dBackwardInput(dy, wt, g, x.shape, { out: dx }),
        dw: () => conv2dBackwardWeight(x, dy, g, dw, db, { mc: MC }),
      };
    },
  };
}

// --- QAT student layer: weight update (quantise + pack on the engine), INT8 forward, fake-quant backward ---
interface QatShape { name: string; setup(eng: Engine): { upd: () => void; fwd: () => void; bwd: () => void } }
function qatLinear(M: number, K: number, N: number, label: string): QatShape {
  return {
    name: label,
    setup(eng) {
      const act = actParamsFromRange(-1, 1, 127);
      const w = eng.fromArray(rand(N * K, 11).map((v) => v * 0.1), [N, K]);
      const b = eng.fromArray(rand(N, 12), [N]);
      const x = eng.fromArray(rand(M * K, 13), [M, K]);
      const dy = eng.fromArray(rand(M * N, 14), [M, N]);
      const fq = createFakeQuantLinear(eng, N, K, act);
      const scales = weightScalesOf(w, N);
      updateFakeQuantLinear(fq, w, b, scales);
      const dw = eng.empty([N, K]), db = eng.empty([N]);
      return {
        upd: () => updateFakeQuantLinear(fq, w, b, scales),
        fwd: () => eng.scope(() => void fakeQuantLinear(x, fq)),
        bwd: () => eng.scope(() => void fakeQuantLinearBackward(x, w, dy, fq, { dw, db })),
      };
    },
  };
}
function qatConv(B: number, H: number, W: number, cin: number, cout: number, k: number, stride: number, pad: Padding4, label: string): QatShape {
  const Ho = Math.floor((H + pad[0] + pad[2] - k) / stride) + 1, Wo = Math.floor((W + pad[1] + pad[3] - k) / stride) + 1;
  return {
    name: label,
    setup(eng) {
      const act = actParamsFromRange(-1, 1, 127);
      const g: ConvBackwardGeometry = { cout, cin, kh: k, kw: k, stride, padding: pad };
      const w = eng.fromArray(rand(cout * cin * k * k, 21).map((v) => v * 0.1), [cout, cin, k, k]);
      const b = eng.fromArray(rand(cout, 22), [cout]);
      const x = eng.fromArray(rand(B * H * W * cin, 23), [B, H, W, cin]);
      const dy = eng.fromArray(rand(B * Ho * Wo * cout, 24), [B, Ho, Wo, cout]);
      const fq = createFakeQuantConv2d(eng, g, act);
      const scales = weightScalesOf(w, cout);
      updateFakeQuantConv2d(fq, w, b, scales);
      const dw = eng.empty([cout, cin, k, k]), db = eng.empty([cout]);
      return {
        upd: () => updateFakeQuantConv2d(fq, w, b, scales),
        fwd: () => eng.scope(() => void fakeQuantConv2d(x, fq)),
        bwd: () => eng.scope(() => void fakeQuantConv2dBackward(x, w, dy, fq, { dw, db })),
      };
    },
  };
}

const P1: Padding4 = [1, 1, 1, 1];
const shapes: Shape[] = [
  linearShape(4096, 320, 320),
  linearShape(4096, 320, 1280),
  linearShape(154, 768, 768, "linear 154x768x768 (77 tok x2)"),
  convShape(2, 32, 32, 64, 64, 3, 1, P1, "conv3x3 2x32x32x64->64"),
  convShape(2, 64, 64, 320, 320, 3, 1, P1, "conv3x3 2x64x64x320->320"),
  convShape(2, 64, 64, 320, 320, 3, 2, [0, 0, 1, 1], "conv3x3 s2 (0,1,0,1) 2x64x64x320->320"),
  convShape(2, 32, 32, 320, 640, 1, 1, [0, 0, 0, 0], "conv1x1 2x32x32x320->640"),
  // fashion-sd-tiny (64/128 channels, 8x8 latents) at training batch 8
  convShape(8, 8, 8, 4, 64, 3, 1, P1, "tiny b8: conv_in 8x8x8x4->64"),
  convShape(8, 8, 8, 64, 64, 3, 1, P1, "tiny b8: conv3x3 8x8x8x64->64"),
  convShape(8, 8, 8, 64, 64, 3, 2, P1, "tiny b8: conv3x3 s2 8x8x8x64->64"),
  convShape(8, 4, 4, 128, 128, 3, 1, P1, "tiny b8: conv3x3 8x4x4x128->128"),
  convShape(8, 8, 8, 64, 4, 3, 1, P1, "tiny b8: conv_out 8x8x8x64->4"),
  linearShape(512, 64, 64, "tiny b8: linear 512x64x64 (q/k/v/out)"),
  linearShape(512, 64, 512, "tiny b8: linear 512x64x512 (GEGLU proj)"),
  linearShape(512, 256, 64, "tiny b8: linear 512x256x64 (ff out)"),
  linearShape(128, 128, 128, "tiny b8: linear 128x128x128 (4x4 level)"),
];
const qatShapes: QatShape[] = [
  qatConv(8, 8, 8, 64, 64, 3, 1, P1, "tiny b8: conv3x3 8x8x8x64->64"),
  qatConv(8, 8, 8, 64, 64, 3, 2, P1, "tiny b8: conv3x3 s2 8x8x8x64->64"),
  qatConv(8, 4, 4, 128, 128, 3, 1, P1, "tiny b8: conv3x3 8x4x4x128->128"),
  qatLinear(512, 64, 512, "tiny b8: linear 512x64x512 (GEGLU proj)"),
  qatLinear(512, 256, 64, "tiny b8: linear 512x256x64 (ff out)"),
  qatConv(2, 32, 32, 64, 64, 3, 1, P1, "conv3x3 2x32x32x64->64"),
  qatLinear(4096, 320, 320, "linear 4096x320x320"),
];
const ONLY = args.has("only") ? new RegExp(args.get("only")!) : null;
if (ONLY) {
  shapes.splice(0, shapes.length, ...shapes.filter((s) => ONLY.test(s.name)));
  qatShapes.splice(0, qatShapes.length, ...qatShapes.filter((s) => ONLY.test(s.name)));
}

interface Row { shape: string; simd: SimdVariant; threads: number; op: string; ms: number; gflops: number; idle: boolean }
const results: Row[] = [];
const configs: { simd: SimdVariant; threads: number; eng: Engine }[] = [];
for (const simd of SIMDS) for (const threads of [1, 2]) configs.push({ simd, threads, eng: await Engine.create({ threads, simd, memoryBytes: 1024 << 20 }) });
for (const s of shapes)
  for (const { simd, threads, eng } of configs)
    eng.scope(() => {
      const ops = s.setup(eng);
      for (const op of ["fwd", "dx", "dw"] as const) {
        const idle = waitIdle();
        const dt = timeIt(ops[op]);
        results.push({ shape: s.name, simd, threads, op, ms: dt * 1e3, gflops: s.flops / dt / 1e9, idle });
      }
    });
const qatResults: Row[] = [];
if (!args.has("no-qat"))
  for (const s of qatShapes)
    for (const { simd, threads, eng } of configs)
      eng.scope(() => {
        const ops = s.setup(eng);
        for (const op of ["upd", "fwd", "bwd"] as const) {
          const idle = waitIdle();
          const dt = timeIt(ops[op]);
          qatResults.push({ shape: s.name, simd, threads, op, ms: dt * 1e3, gflops: 0, idle });
        }
      });
for (const c of configs) c.eng.close();

const cpu = os.cpus()[0]?.model ?? "?";
console.log(`CPU: ${cpu} x${os.cpus().length}, node ${process.version}, load average ${os.loadavg().map((v) => v.toFixed(2)).join(" ")}${MC ? `, dW mc=${MC}` : ""}`);
const pad = (s: string, n: number) => s.padEnd(n), lpad = (s: string, n: number) => s.padStart(n);
console.log(`${pad("shape", 42)}${pad("simd", 9)}${pad("op", 4)}${lpad("1T GF/s", 9)}${lpad("2T GF/s", 9)}${lpad("1T ms", 9)}${lpad("2T ms", 9)}${lpad("2T/fwd", 8)}`);
for (const s of shapes)
  for (const simd of SIMDS)
    for (const op of ["fwd", "dx", "dw"]) {
      const get = (t: number, o = op) => results.find((r) => r.shape === s.name && r.simd === simd && r.threads === t && r.op === o)!;
      const r1 = get(1), r2 = get(2), f2 = get(2, "fwd");
      const flag = r1.idle && r2.idle ? " " : "*";
      console.log(`${pad(s.name, 41)}${flag}${pad(simd, 9)}${pad(op, 4)}${lpad(r1.gflops.toFixed(1), 9)}${lpad(r2.gflops.toFixed(1), 9)}${lpad(r1.ms.toFixed(3), 9)}${lpad(r2.ms.toFixed(3), 9)}${lpad((r2.gflops / f2.gflops).toFixed(2), 8)}`);
    }
console.log("fwd = linear()/conv2d() (f32 packed kernels); dx = linearBackwardInput/conv2dBackwardInput (repacks W each call);");
console.log("dw = linearBackwardWeight/conv2dBackwardWeight incl. db. GF/s = 2*M*N*K / best wall time; * = CPUs not idle at start.");
if (qatResults.length) {
  console.log("\nQAT student layer (7-bit activations): upd = updateFakeQuant* (quantise + pack the f32 master weight on the engine),");
  console.log("fwd = fakeQuantLinear/Conv2d (the engine INT8 op), bwd = fakeQuant*Backward (x^, dW^ GEMM, weight mask, db, dX GEMM, activation mask).");
  console.log("f32 = the f32 layer's fwd + dx + dw on the same shape, for comparison. Times in ms.");
  console.log(`${pad("shape", 42)}${pad("simd", 9)}${lpad("thr", 4)}${lpad("upd", 9)}${lpad("fwd", 9)}${lpad("bwd", 9)}${lpad("QAT sum", 9)}${lpad("f32 sum", 9)}`);
  for (const s of qatShapes)
    for (const simd of SIMDS)
      for (const t of [1, 2]) {
        const get = (o: string) => qatResults.find((r) => r.shape === s.name && r.simd === simd && r.threads === t && r.op === o);
        const f = (o: string) => results.find((r) => r.shape === s.name && r.simd === simd && r.threads === t && r.op === o)?.ms;
        const u = get("upd")!, fw = get("fwd")!, bw = get("bwd")!;
        const f32 = f("fwd") !== undefined ? f("fwd")! + f("dx")! + f("dw")! : NaN;
        const flag = u.idle && fw.idle && bw.idle ? " " : "*";
        console.log(`${pad(s.name, 41)}${flag}${pad(simd, 9)}${lpad(String(t), 4)}${lpad(u.ms.toFixed(3), 9)}${lpad(fw.ms.toFixed(3), 9)}${lpad(bw.ms.toFixed(3), 9)}${lpad((u.ms + fw.ms + bw.ms).toFixed(3), 9)}${lpad(f32.toFixed(3), 9)}`);
      }
}
const dir = path.resolve("bench/results");
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(dir, "backward-dense.json"), JSON.stringify({ date: new Date().toISOString(), cpu, node: process.version, loadAverage: os.loadavg(), mc: MC, results, qat: qatResults }, null, 2));
console.log(`wrote ${path.join(dir, "backward-dense.json")}`);

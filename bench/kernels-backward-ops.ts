// Backward-op benchmark: every backward next to its forward on the same shape, 1 vs 2 threads, baseline vs
// relaxed SIMD. Run: sh bench/backward-ops.sh [--quick] [--threads=1,2] [--rounds=3] [--only=attention]
// [--simd=relaxed]. Prints a table and writes bench/results/backward-ops.json.
// Work counted: GroupNorm/LayerNorm bytes moved (forward: read x twice, write y; backward: read x and dy
// twice, write dx); attention FLOPs 4·B·H·Lq·Lk·D forward and 10·B·H·Lq·Lk·D backward (recomputing S, then
// dP = dO Vᵀ, dV = PᵀdO, dK = dSᵀQ, dQ = dS K: what the kernel executes, the usual 2.5x of the forward).
import type { Engine, SimdVariant } from "../src/runtime/engine.ts";
import { groupNorm, layerNorm } from "../src/nn/norm.ts";
import { attention } from "../src/nn/attention.ts";
import { geglu } from "../src/nn/elementwise.ts";
import { groupNormBackward, layerNormBackward } from "../src/nn/backward/norm.ts";
import { attentionBackward } from "../src/nn/backward/attention.ts";
import { gegluBackward, siluBackward, broadcastGrad } from "../src/nn/backward/elementwise.ts";
import { benchArgs, lcgUniform, runOpMatrix, type OpCase } from "./harness.ts";

const args = benchArgs();
const QUICK = args.has("quick");
const MIN_TIME = QUICK ? 0.2 : 1.0;
const THREADS = (args.get("threads") ?? "1,2").split(",").map(Number);
const ONLY = args.get("only");
const ROUNDS = Number(args.get("rounds") ?? 1);
const SIMDS = (args.get("simd") ?? "baseline,relaxed").split(",") as SimdVariant[];



function rand(n: number, seed: number, std = 1): Float32Array {
  return lcgUniform(n, seed).map((v) => v * std * 1.732);
}


const cases: OpCase[] = [];
{
  const [B, H, W, C, G] = [2, 64, 64, 320, 32];
  const n = B * H * W * C;
  for (const silu of [false, true]) {
    const tag = `groupNorm ${B}x${H}x${W}x${C} g${G}${silu ? " +silu" : ""}`;
    cases.push({
      name: `${tag} fwd`,
      unit: "GB/s",
      work: 3 * n * 4,
      setup(e) {
        const x = e.fromArray(rand(n, 1), [B, H, W, C]);
        const g = e.fromArray(rand(C, 2), [C]);
        const b = e.fromArray(rand(C, 3), [C]);
        const mean = e.empty([B, G]);
        const rstd = e.empty([B, G]);
        return () => e.scope(() => void groupNorm(x, G, g, b, 1e-5, { silu, mean, rstd }));
      },
    });
    cases.push({
      name: `${tag} bwd`,
      unit: "GB/s",
      work: 5 * n * 4,
      setup(e) {
        const x = e.fromArray(rand(n, 1), [B, H, W, C]);
        const dy = e.fromArray(rand(n, 4), [B, H, W, C]);
        const g = e.fromArray(rand(C, 2), [C]);
        const b = e.fromArray(rand(C, 3), [C]);
        const mean = e.empty([B, G]);
        const rstd = e.empty([B, G]);
        groupNorm(x, G, g, b, 1e-5, { silu, mean, rstd });
        return () => e.scope(() => void groupNormBackward(dy, x, G, g, b, mean, rstd, { silu }));
      },
    });
  }
}
{
  const rows = 2 * 4096, C = 320;
  cases.push({
    name: `layerNorm ${rows}x${C} fwd`,
    unit: "GB/s",
    work: 3 * rows * C * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * C, 11), [rows, C]);
      const g = e.fromArray(rand(C, 12), [C]);
      const mean = e.empty([rows]);
      const rstd = e.empty([rows]);
      return () => e.scope(() => void layerNorm(x, g, g, 1e-5, { mean, rstd }));
    },
  });
  cases.push({
    name: `layerNorm ${rows}x${C} bwd`,
    unit: "GB/s",
    work: 5 * rows * C * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * C, 11), [rows, C]);
      const dy = e.fromArray(rand(rows * C, 13), [rows, C]);
      const g = e.fromArray(rand(C, 12), [C]);
      const mean = e.empty([rows]);
      const rstd = e.empty([rows]);
      layerNorm(x, g, g, 1e-5, { mean, rstd });
      return () => e.scope(() => void layerNormBackward(dy, x, g, mean, rstd));
    },
  });
}
{
  // [label, B, heads, Lq, Lk, D]
  const L = QUICK ? 1024 : 4096;
  const shapes: [string, number, number, number, number, number][] = [
    ["self", 2, 8, 1024, 1024, 40],
    ["cross", 2, 8, L, 77, 40],
    ["self", 2, 8, 256, 256, 160],
    ["fashion self 8x8", 4, 8, 64, 64, 8],
    ["fashion cross 8x8", 4, 8, 64, 77, 8],
    ["fashion self 4x4", 4, 8, 16, 16, 16],
    ["fashion cross 4x4", 4, 8, 16, 77, 16],
  ];
  for (const [label, B, H, Lq, Lk, D] of shapes) {
    const tag = `attention ${label} ${B}x${H}h ${Lq}x${Lk} D${D}`;
    const mk = (e: Engine) => {
      const q = e.fromArray(rand(B * Lq * H * D, 4), [B, Lq, H * D]);
      const k = e.fromArray(rand(B * Lk * H * D, 5), [B, Lk, H * D]);
      const v = e.fromArray(rand(B * Lk * H * D, 6), [B, Lk, H * D]);
      const lse = e.empty([B, H, Lq]);
      return { q, k, v, lse };
    };
    cases.push({
      name: `${tag} fwd`,
      unit: "GFLOP/s",
      work: 4 * B * H * Lq * Lk * D,
      setup(e) {
        const { q, k, v, lse } = mk(e);
        return () => e.scope(() => void attention(q, k, v, H, { lse }));
      },
    });
    cases.push({
      name: `${tag} bwd`,
      unit: "GFLOP/s",
      work: 10 * B * H * Lq * Lk * D,
      setup(e) {
        const { q, k, v, lse } = mk(e);
        const out = attention(q, k, v, H, { lse });
        const dO = e.fromArray(rand(B * Lq * H * D, 7), [B, Lq, H * D]);
        return () => e.scope(() => void attentionBackward(dO, q, k, v, out, lse, H));
      },
    });
  }
}
{
  const rows = 2 * 4096, N = 1280;
  cases.push({
    name: `geglu ${rows}x${2 * N} fwd`,
    unit: "GB/s",
    work: 3 * rows * N * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * 2 * N, 13, 2), [rows, 2 * N]);
      return () => e.scope(() => void geglu(x));
    },
  });
  cases.push({
    name: `geglu ${rows}x${2 * N} bwd`,
    unit: "GB/s",
    work: 5 * rows * N * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * 2 * N, 13, 2), [rows, 2 * N]);
      const dy = e.fromArray(rand(rows * N, 14), [rows, N]);
      return () => e.scope(() => void gegluBackward(dy, x));
    },
  });
  cases.push({
    name: `silu ${rows}x${N} bwd`,
    unit: "GB/s",
    work: 3 * rows * N * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * N, 15, 2), [rows, N]);
      const dy = e.fromArray(rand(rows * N, 16), [rows, N]);
      return () => e.scope(() => void siluBackward(dy, x));
    },
  });
  cases.push({
    name: `bias grad [2,64,64,320] -> [2,1,1,320]`,
    unit: "GB/s",
    work: 2 * 64 * 64 * 320 * 4,
    setup(e) {
      const dy = e.fromArray(rand(2 * 64 * 64 * 320, 17), [2, 64, 64, 320]);
      return () => e.scope(() => void broadcastGrad(dy, [2, 1, 1, 320]));
    },
  });
}

await runOpMatrix({ cases, simds: SIMDS, threads: THREADS, rounds: ROUNDS, minTime: MIN_TIME, minRepeats: 2, only: ONLY, quick: QUICK, resultFile: "backward-ops.json", showMs: true });

// FP32 op benchmark (GroupNorm, fused attention, and a few cheap ops), 1 vs 2 threads, baseline vs
// relaxed SIMD. Run: sh bench/ops.sh [--quick] [--threads=1,2] [--rounds=3] [--only=attention]
// (builds the kernels, bundles this file with esbuild, runs it under Node with bin/engine-flags.js' flags and
// --no-liftoff). Prints a table and writes bench/results/ops.json.
import { groupNorm, layerNorm } from "../src/nn/norm.ts";
import { attention, softmax } from "../src/nn/attention.ts";
import { geglu, silu, add } from "../src/nn/elementwise.ts";
import { benchArgs, lcgUniform, runOpMatrix, type OpCase } from "./harness.ts";

const args = benchArgs();
const QUICK = args.has("quick");
const MIN_TIME = QUICK ? 0.2 : 1.0;
const THREADS = (args.get("threads") ?? "1,2").split(",").map(Number);
const ONLY = args.get("only"); // substring filter on case names
/** Rounds over the whole matrix; each cell keeps its best round (robust against other load on the machine). */
const ROUNDS = Number(args.get("rounds") ?? 1);



function rand(n: number, seed: number, std = 1): Float32Array {
  return lcgUniform(n, seed).map((v) => v * std * 1.732);
}


const cases: OpCase[] = [];
{
  const [B, H, W, C, G] = [2, 64, 64, 320, 32];
  const n = B * H * W * C;
  for (const fused of [false, true])
    cases.push({
      name: `groupNorm ${B}x${H}x${W}x${C} g${G}${fused ? " +silu" : ""}`,
      unit: "GB/s",
      work: 3 * n * 4, // stats pass reads x, apply pass reads x and writes y
      setup(e) {
        const x = e.fromArray(rand(n, 1), [B, H, W, C]);
        const g = e.fromArray(rand(C, 2), [C]);
        const b = e.fromArray(rand(C, 3), [C]);
        return () => e.scope(() => void groupNorm(x, G, g, b, 1e-5, { silu: fused }));
      },
    });
}
{
  const [B, H, L, Lc, D] = [2, 8, 4096, 77, 40];
  const flops = (lq: number, lk: number) => 4 * B * H * lq * lk * D;
  const Lself = QUICK ? 1024 : L;
  cases.push({
    name: `attention self ${B}x${H}h ${Lself}x${Lself} D${D}`,
    unit: "GFLOP/s",
    work: flops(Lself, Lself),
    setup(e) {
      const q = e.fromArray(rand(B * Lself * H * D, 4), [B, Lself, H * D]);
      const k = e.fromArray(rand(B * Lself * H * D, 5), [B, Lself, H * D]);
      const v = e.fromArray(rand(B * Lself * H * D, 6), [B, Lself, H * D]);
      return () => e.scope(() => void attention(q, k, v, H));
    },
  });
  cases.push({
    name: `attention cross ${B}x${H}h ${L}x${Lc} D${D}`,
    unit: "GFLOP/s",
    work: flops(L, Lc),
    setup(e) {
      const q = e.fromArray(rand(B * L * H * D, 7), [B, L, H * D]);
      const k = e.fromArray(rand(B * Lc * H * D, 8), [B, Lc, H * D]);
      const v = e.fromArray(rand(B * Lc * H * D, 9), [B, Lc, H * D]);
      return () => e.scope(() => void attention(q, k, v, H));
    },
  });
  // INT8 attention (src/nn/attention-int8.ts), the SD 1.5 shapes of every level
  for (const [lvl, Ls, Dh] of [[1, Lself, D], [2, QUICK ? 256 : 1024, 80], [3, QUICK ? 64 : 256, 160]] as const)
    for (const int8 of [false, true]) {
      if (lvl === 1 && !int8) continue; // the f32 row above
      cases.push({
        name: `attention${int8 ? " int8" : ""} self ${B}x${H}h ${Ls}x${Ls} D${Dh}`,
        unit: "GFLOP/s",
        work: 4 * B * H * Ls * Ls * Dh,
        setup(e) {
          const q = e.fromArray(rand(B * Ls * H * Dh, 4), [B, Ls, H * Dh]);
          const k = e.fromArray(rand(B * Ls * H * Dh, 5), [B, Ls, H * Dh]);
          const v = e.fromArray(rand(B * Ls * H * Dh, 6), [B, Ls, H * Dh]);
          return () => e.scope(() => void attention(q, k, v, H, { int8 }));
        },
      });
    }
  cases.push({
    name: `attention int8 cross ${B}x${H}h ${L}x${Lc} D${D}`,
    unit: "GFLOP/s",
    work: flops(L, Lc),
    setup(e) {
      const q = e.fromArray(rand(B * L * H * D, 7), [B, L, H * D]);
      const k = e.fromArray(rand(B * Lc * H * D, 8), [B, Lc, H * D]);
      const v = e.fromArray(rand(B * Lc * H * D, 9), [B, Lc, H * D]);
      return () => e.scope(() => void attention(q, k, v, H, { int8: true }));
    },
  });
  cases.push({
    name: `attention clip causal 1x12h 77x77 D64`,
    unit: "GFLOP/s",
    work: (4 * 12 * 77 * 78 * 64) / 2,
    setup(e) {
      const q = e.fromArray(rand(77 * 768, 10), [1, 77, 768]);
      return () => e.scope(() => void attention(q, q, q, 12, { causal: true }));
    },
  });
}
{
  const rows = 2 * 4096, C = 320;
  cases.push({
    name: `layerNorm ${rows}x${C}`,
    unit: "GB/s",
    work: 2 * rows * C * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * C, 11), [rows, C]);
      const g = e.fromArray(rand(C, 12), [C]);
      return () => e.scope(() => void layerNorm(x, g, g, 1e-5));
    },
  });
  const N = 1280;
  cases.push({
    name: `geglu ${rows}x${2 * N}`,
    unit: "GB/s",
    work: 3 * rows * N * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * 2 * N, 13, 2), [rows, 2 * N]);
      return () => e.scope(() => void geglu(x));
    },
  });
  cases.push({
    name: `silu ${rows}x${N}`,
    unit: "GB/s",
    work: 2 * rows * N * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * N, 14, 2), [rows, N]);
      return () => e.scope(() => void silu(x));
    },
  });
  cases.push({
    name: `add bias [2,64,64,320]+[2,1,1,320]`,
    unit: "GB/s",
    work: 2 * 2 * 64 * 64 * 320 * 4,
    setup(e) {
      const x = e.fromArray(rand(2 * 64 * 64 * 320, 15), [2, 64, 64, 320]);
      const b = e.fromArray(rand(2 * 320, 16), [2, 1, 1, 320]);
      return () => e.scope(() => void add(x, b));
    },
  });
  cases.push({
    name: `softmax ${rows}x77`,
    unit: "GB/s",
    work: 2 * rows * 77 * 4,
    setup(e) {
      const x = e.fromArray(rand(rows * 77, 17, 5), [rows, 77]);
      return () => e.scope(() => void softmax(x));
    },
  });
}

await runOpMatrix({ cases, simds: ["baseline", "relaxed"], threads: THREADS, rounds: ROUNDS, minTime: MIN_TIME, minRepeats: 2, only: ONLY, quick: QUICK, resultFile: "ops.json" });

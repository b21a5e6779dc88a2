// The Node flags the stepq engine needs on the running Node; used by the launcher (bin/stepq.js) and by the
// test runner (vitest.config.ts), so the tests run the engine exactly as `stepq` does.
//
// Node 20 (V8 11.3) has relaxed SIMD behind --experimental-wasm-relaxed-simd, and its baseline compiler
// (Liftoff) computes i32x4.relaxed_dot_i8x16_i7x16_add_s wrongly ([40,104,168,232] for [1020,1053,1086,1119]),
// so the engine's probe rejects the relaxed build unless Liftoff is off too: both flags.
// Node 22 (V8 12.4) and 24 (V8 13.6) ship relaxed SIMD and reject that flag ("bad option"), and their Liftoff
// is right: scripts/liftoff-check.sh (generate "a photo of a sneaker" --seed 1 for fp32, bf16, int8, mixed:5
// at 1 and 2 threads) gives byte-identical PNGs with V8's default tiering, --no-liftoff and --liftoff-only,
// on Node 22, 24 and Deno 2.9, and the same PNGs as Node 20 with both flags. Speed: the same on the shipped
// model (about 1.0-1.3 s per image either way); on SD 1.5 (`--time`) only the first UNet call of a process
// is slower without --no-liftoff (a call stays in the tier it started in): Node 24 int8 17.2 s vs 11.3 s,
// fp32 29.3 s vs 18.3 s; Node 22 int8 17.2 vs 11.9 s, fp32 25.2 vs 18.0 s; every later call the same
// (10.7 / 17.3-17.8 s). About 1% of a 50-step SD 1.5 image: not worth a second process on every command,
// so Node 22+ gets no flags and runs the CLI in-process. (2-core AMD EPYC VM shared with other jobs: the
// timings are +-15%.)
// The engine's startup probe stays the judge: whatever the flags, it falls back to baseline SIMD if the
// relaxed ops are missing or wrong.
// Deno (which reports a Node version for compatibility) takes V8 flags differently and needs none (README).
export function engineFlags(versions = process.versions) {
  if (versions.deno || versions.bun) return [];
  return Number(versions.node.split(".")[0]) <= 20 ? ["--experimental-wasm-relaxed-simd", "--no-liftoff"] : [];
}

import { defineConfig } from "vitest/config";

// Tests run in forked Node processes with relaxed SIMD enabled and Liftoff off (Liftoff computes
// relaxed_dot wrongly on Node 20), so both kernel builds can be tested: each test picks
// simd: "baseline" or "relaxed" when it creates an engine.
export default defineConfig({
  test: {
    pool: "forks",
    execArgv: ["--experimental-wasm-relaxed-simd", "--no-liftoff"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    include: ["test/**/*.test.ts"],
  },
});

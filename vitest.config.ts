import { defineConfig } from "vitest/config";
import { engineFlags } from "./bin/engine-flags.js";

// Tests run in forked Node processes with the flags `stepq` runs the engine with on this Node (Node 20:
// relaxed SIMD on, Liftoff off, since Liftoff computes relaxed_dot wrongly there; Node 22+: none), so both
// kernel builds can be tested: each test picks simd: "baseline" or "relaxed" when it creates an engine.
export default defineConfig({
  test: {
    pool: "forks",
    execArgv: engineFlags(),
    testTimeout: 120_000,
    hookTimeout: 120_000,
    include: ["test/**/*.test.ts"],
  },
});

// The kernel tests' engine matrix: one engine per (SIMD build, thread count), created before the file's tests
// and closed after, and a check that runs an op on every thread count of one build, compares each output with
// its reference (relative-to-max error) and requires the outputs to be bit-identical across thread counts.
import { afterAll, beforeAll, expect } from "vitest";
import { Engine } from "../../src/runtime/engine.ts";
import type { Tensor } from "../../src/runtime/tensor.ts";
import { firstBitDiff, relErr } from "../../src/nn/reference/ops.ts";

export const VARIANTS = ["baseline", "relaxed"] as const;
export const THREADS = [1, 2, 4];

export function engineMatrix(memoryBytes: number) {
  const engines: Record<string, Engine[]> = {};
  beforeAll(async () => {
    for (const simd of VARIANTS) engines[simd] = await Promise.all(THREADS.map((threads) => Engine.create({ threads, simd, memoryBytes })));
  });
  afterAll(() => Object.values(engines).flat().forEach((e) => e.close()));

  /**
   * Runs f on every thread count of one build; each output is checked against its reference (a null reference:
   * bit-identity only) and for bit-identity across thread counts. Returns the 1-thread outputs.
   */
  function check(simd: string, f: (e: Engine) => Tensor[], expected: (ArrayLike<number> | null)[], tol: number): Float32Array[] {
    const outs = engines[simd].map((e) => e.scope(() => f(e).map((t) => t.toArray())));
    for (let i = 0; i < outs.length; i++)
      for (let k = 0; k < expected.length; k++) {
        expect(firstBitDiff(outs[i][k], outs[0][k]), `${simd}, output ${k}: ${THREADS[i]} threads differ from 1 thread`).toBe(-1);
        if (!expected[k]) continue;
        const err = relErr(outs[i][k], expected[k]!);
        if (process.env.SHOW_ERR && i === 0) console.log(`ERR ${expect.getState().currentTestName} out${k}: ${err.toExponential(2)}`);
        expect(err, `${simd}, ${THREADS[i]} threads, output ${k}: rel-to-max error`).toBeLessThanOrEqual(tol);
      }
    return outs[0];
  }
  return { engines, check };
}

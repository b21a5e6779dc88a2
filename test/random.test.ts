import { describe, it, expect } from "vitest";
import { Rng } from "../src/runtime/random.ts";

describe("seeded noise", () => {
  it("is reproducible and seed-dependent", async () => {
    expect(Array.from(new Rng(42).normal(9))).toEqual(Array.from(new Rng(42).normal(9)));
    expect(new Rng(42).normal(4)[0]).not.toBe(new Rng(43).normal(4)[0]);
  });
  it("is standard normal", async () => {
    const z = new Rng(7).normal(200000);
    let m = 0, v = 0;
    for (const x of z) m += x;
    m /= z.length;
    for (const x of z) v += (x - m) ** 2;
    v /= z.length;
    expect(Math.abs(m)).toBeLessThan(0.01);
    expect(Math.abs(v - 1)).toBeLessThan(0.02);
  });
  it("rejects bad seeds", async () => {
    expect(() => new Rng(-1)).toThrow(/seed/);
    expect(() => new Rng(1.5)).toThrow(/seed/);
  });
});

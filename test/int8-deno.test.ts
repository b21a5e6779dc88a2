import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import * as path from "node:path";

// The INT8 dot paths under Deno (V8 15): each forced in turn, exact against the TS reference (test/deno/int8-paths.ts).
describe("INT8 dot paths under Deno", () => {
  it("every path the engine can run is exact; the others are refused", () => {
    const deno = path.resolve("node_modules/.bin/deno");
    const r = spawnSync(deno, ["run", "--allow-read", "--allow-env", "--v8-flags=--no-liftoff", "test/deno/int8-paths.ts"], { encoding: "utf8", timeout: 120_000 });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    const values = Object.values(out.results) as string[];
    expect(values.length).toBe(14);
    for (const [k, v] of Object.entries(out.results)) expect(v, k).toMatch(/^(exact|not exact here: refused)$/);
    // 7-bit and i16 paths run everywhere
    for (const p of ["fused-7bit", "split-7bit", "i16-7bit", "i16-8bit"]) for (const t of [1, 2]) expect(out.results[`${p}/T${t}`]).toBe("exact");
  });
});

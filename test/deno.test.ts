import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import * as path from "node:path";

// The engine must run unchanged under Deno (installed from npm as a dev dependency).
describe("Deno", () => {
  it("runs the engine with relaxed SIMD and the baseline build", async () => {
    const deno = path.resolve("node_modules/.bin/deno");
    const r = spawnSync(deno, ["run", "--allow-read", "--allow-env", "test/deno/smoke.ts"], { encoding: "utf8", timeout: 120_000 });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    expect(out.results.auto).toEqual({ simd: "relaxed", probe: true, add: true });
    expect(out.results.baseline).toEqual({ simd: "baseline", probe: false, add: true });
  });
});

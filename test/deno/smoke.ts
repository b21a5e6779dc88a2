// Deno smoke test of the engine (run by test/deno.test.ts): workers, probe, and kernels under Deno.
import { Engine } from "../../src/runtime/engine.ts";

const results: Record<string, unknown> = {};
for (const simd of ["auto", "baseline"] as const) {
  const eng = await Engine.create({ threads: 2, simd, memoryBytes: 64 << 20 });
  const n = 1001;
  const a = eng.fromArray(Float32Array.from({ length: n }, (_, i) => i), [n]);
  const c = eng.empty([n]);
  eng.run("add_f32", a.ptr, a.ptr, c.ptr, n);
  const v = c.f32();
  let ok = true;
  for (let i = 0; i < n; i++) if (v[i] !== 2 * i) ok = false;
  results[simd] = { simd: eng.simd, probe: eng.probe.ok, add: ok };
  eng.close();
}
console.log(JSON.stringify({ runtime: `deno ${(globalThis as any).Deno.version.deno}`, results }));

// Measures the machine's f32 SIMD multiply-add peak with the register-only loop peak_fma_f32
// (assembly/gemm.ts): 12 independent f32x4 accumulators, relaxed_madd (relaxed build) or mul + add
// (baseline build), on 1 thread and on all threads concurrently.
// Run: sh bench/gemm.sh peak [--threads=N]
import { Engine, type SimdVariant } from "../src/runtime/engine.ts";
import * as os from "node:os";

const arg = process.argv.find((a) => a.startsWith("--threads="));
const maxThreads = arg ? Number(arg.split("=")[1]) : os.availableParallelism();

function gflops(eng: Engine): number {
  const out = eng.zeros([eng.threads * 4]);
  let iters = 1 << 20;
  for (;;) {
    const t0 = performance.now();
    eng.run("peak_fma_f32", iters, out.ptr);
    if (performance.now() - t0 > 50) break;
    iters *= 2;
  }
  let best = Infinity;
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    eng.run("peak_fma_f32", iters, out.ptr);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  out.free();
  return (eng.threads * iters * 96) / best / 1e9;
}

console.log(`${os.cpus()[0]?.model} x${os.cpus().length}, node ${process.version}, load average ${os.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
for (const simd of ["relaxed", "baseline"] as SimdVariant[])
  for (const threads of [...new Set([1, maxThreads])]) {
    const eng = await Engine.create({ threads, simd, memoryBytes: 16 << 20 });
    const g = gflops(eng);
    console.log(`${simd === "relaxed" ? "relaxed_madd" : "mul+add     "} ${threads} thread(s): ${g.toFixed(1)} GFLOP/s (${(g / threads).toFixed(1)} per thread)`);
    eng.close();
  }

// Runs the loops of loops.ts once and prints one line (bench/runtimes.sh runs it under several engines/flags).
import * as fs from "node:fs";
const wasm = fs.readFileSync(new URL("../../build/bench/runtime-loops.wasm", import.meta.url));
const memory = new WebAssembly.Memory({ initial: 64 });
const { instance } = await WebAssembly.instantiate(wasm, { env: { memory, abort() {} } });
const x = instance.exports;
const best = (fn) => { fn(); let b = Infinity; for (let i = 0; i < 5; i++) { const t0 = performance.now(); fn(); b = Math.min(b, performance.now() - t0); } return b / 1000; };
const len = 256, reps = 40000; // weight panel 16 KB (L1)
const tGemm = best(() => x.gemm_tile(1024, 8192, 65536, len, reps, 0));
const iters = 20_000_000;
const tConst = best(() => x.mul_const(iters, 0));
const tLoaded = best(() => x.mul_loaded(iters, 0));
const label = process.argv[2] ?? "";
console.log(`${label.padEnd(52)} ${((reps * len * 64) / tGemm / 1e9).toFixed(1).padStart(8)} ${((tConst * 1e9) / iters).toFixed(2).padStart(10)} ${((tLoaded * 1e9) / iters).toFixed(2).padStart(10)}`);

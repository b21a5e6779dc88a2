// Every INT8 dot path this engine can run, under Deno (run by test/int8-deno.test.ts): exact accumulators
// against the plain TS reference at 1 and 2 threads, and the engine's capability report.
import { Engine } from "../../src/runtime/engine.ts";
import { actParamsFromRange } from "../../src/nn/quant.ts";
import { int8Capabilities, linearInt8, prepareLinearInt8, conv2dInt8, prepareConv2dInt8, type Int8PathRequest } from "../../src/nn/int8.ts";
import { linearInt8Ref, conv2dInt8Ref } from "../../src/nn/reference/lowp.ts";

function rand(n: number, seed: number, lo: number, hi: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), lo + ((hi - lo) * s) / 4294967296));
}

const paths: { name: string; qmax: number; wq: number; path: Int8PathRequest; dot: "auto" | "fused" | "split"; cap?: "u8Exact" | "u8w7Fused" | "u8w7Split" }[] = [
  { name: "fused-7bit", qmax: 127, wq: 127, path: "auto", dot: "fused" },
  { name: "split-7bit", qmax: 127, wq: 127, path: "auto", dot: "split" },
  { name: "i16-7bit", qmax: 127, wq: 127, path: "i16", dot: "auto" },
  { name: "i16-8bit", qmax: 255, wq: 127, path: "i16", dot: "auto" },
  { name: "fused-8bit", qmax: 255, wq: 127, path: "relaxed", dot: "fused", cap: "u8Exact" },
  { name: "fused-8bit-w7", qmax: 255, wq: 63, path: "relaxed", dot: "fused", cap: "u8w7Fused" },
  { name: "split-8bit-w7", qmax: 255, wq: 63, path: "relaxed", dot: "split", cap: "u8w7Split" },
];
const results: Record<string, string> = {};
const caps: Record<string, unknown> = {};
for (const threads of [1, 2]) {
  const eng = await Engine.create({ threads, simd: "relaxed", memoryBytes: 64 << 20 });
  caps[threads] = int8Capabilities(eng);
  for (const p of paths) {
    const key = `${p.name}/T${threads}`;
    const act = actParamsFromRange(-1.1, 2.2, p.qmax, p.wq);
    if (p.cap && !int8Capabilities(eng)[p.cap]) {
      // the probe says this sequence is not exact here: asking for it must fail, not saturate
      try {
        const lw = prepareLinearInt8(eng, new Float32Array(8), null, 2, 4, act, p.path);
        linearInt8(eng.fromArray(new Float32Array(4), [1, 4]), lw, { dot: p.dot });
        results[key] = "NOT REFUSED";
      } catch {
        results[key] = "not exact here: refused";
      }
      continue;
    }
    const [M, K, N] = [37, 72, 21];
    const x = rand(M * K, 1, -1.5, 2.5), w = rand(N * K, 2, -0.2, 0.2);
    const lw = prepareLinearInt8(eng, w, null, N, K, act, p.path);
    const acc = linearInt8(eng.fromArray(x, [M, K]), lw, { raw: true, dot: p.dot }).i32();
    const ref = linearInt8Ref(x, w, null, M, K, N, act).acc;
    let ok = acc.every((v, i) => v === ref[i]);
    const s = { batch: 1, h: 5, w: 6, cin: 7, cout: 10, kh: 3, kw: 3, stride: 1, padding: [1, 1, 1, 1] as [number, number, number, number] };
    const xc = rand(5 * 6 * 7, 3, -1, 2), wc = rand(10 * 7 * 9, 4, -0.3, 0.3);
    const cw = prepareConv2dInt8(eng, wc, null, { cout: 10, cin: 7, kh: 3, kw: 3 }, { stride: 1, padding: 1 }, act, p.path);
    const cacc = conv2dInt8(eng.fromArray(xc, [1, 5, 6, 7]), cw, { raw: true, dot: p.dot }).i32();
    const cref = conv2dInt8Ref(xc, wc, null, s, act).acc;
    ok = ok && cacc.every((v, i) => v === cref[i]);
    results[key] = ok ? "exact" : "MISMATCH";
  }
  eng.close();
}
console.log(JSON.stringify({ runtime: `deno ${(globalThis as any).Deno.version.deno}`, results, caps }));

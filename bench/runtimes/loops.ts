// AssemblyScript, compiled on its own by bench/runtimes.sh (not part of the engine's wasm; tsconfig.json excludes it).
// Micro-loops that show how a JS engine compiles our kernels' loop shapes (bench/runtimes.sh).
@inline function madd(a: v128, b: v128, c: v128): v128 {
  return f32x4.relaxed_madd(a, b, c);
}

/** The FP32 GEMM inner loop (assembly/gemm.ts): 4 weight loads + 2 broadcast loads + 8 FMAs per k. */
export function gemm_tile(a0: usize, a1: usize, bq: usize, len: i32, reps: i32, out: usize): void {
  for (let r = 0; r < reps; r++) {
    let c00 = f32x4.splat(0), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    let pa0 = a0, pa1 = a1, pb = bq;
    for (let l = len; l > 0; l--) {
      const b0 = v128.load(pb), b1 = v128.load(pb, 16), b2 = v128.load(pb, 32), b3 = v128.load(pb, 48);
      let a = v128.load32_splat(pa0);
      c00 = madd(a, b0, c00); c01 = madd(a, b1, c01); c02 = madd(a, b2, c02); c03 = madd(a, b3, c03);
      a = v128.load32_splat(pa1);
      c10 = madd(a, b0, c10); c11 = madd(a, b1, c11); c12 = madd(a, b2, c12); c13 = madd(a, b3, c13);
      pa0 += 4; pa1 += 4; pb += 64;
    }
    v128.store(out, f32x4.add(f32x4.add(f32x4.add(c00, c01), f32x4.add(c02, c03)), f32x4.add(f32x4.add(c10, c11), f32x4.add(c12, c13))));
  }
}

const M_TAB: usize = memory.data<f32>([0.999999, 0.999999, 0.999999, 0.999999]);

/** 8 independent multiply chains by a constant written as v128.const. */
export function mul_const(iters: i32, out: usize): void {
  let a0 = f32x4.splat(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const m = f32x4.splat(0.999999);
  for (let i = 0; i < iters; i++) {
    a0 = f32x4.mul(a0, m); a1 = f32x4.mul(a1, m); a2 = f32x4.mul(a2, m); a3 = f32x4.mul(a3, m);
    a4 = f32x4.mul(a4, m); a5 = f32x4.mul(a5, m); a6 = f32x4.mul(a6, m); a7 = f32x4.mul(a7, m);
  }
  v128.store(out, f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7))));
}

/** The same with the constant loaded from memory once. */
export function mul_loaded(iters: i32, out: usize): void {
  let a0 = f32x4.splat(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const m = v128.load(M_TAB);
  for (let i = 0; i < iters; i++) {
    a0 = f32x4.mul(a0, m); a1 = f32x4.mul(a1, m); a2 = f32x4.mul(a2, m); a3 = f32x4.mul(a3, m);
    a4 = f32x4.mul(a4, m); a5 = f32x4.mul(a5, m); a6 = f32x4.mul(a6, m); a7 = f32x4.mul(a7, m);
  }
  v128.store(out, f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7))));
}

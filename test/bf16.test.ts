// BF16 rounding (bit patterns) and the emulated-BF16 linear / conv2d kernels against the TS reference
// (src/nn/reference/lowp.ts). The kernels sum bf16 x bf16 products (exact in f32) in k order, so the
// outputs match the reference exactly (the brief's tolerance is 1 bf16 ulp; we check 0), on both builds
// (fused and unfused multiply-add agree because the products are exact) and 1, 2, 4 threads.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { bf16BitsToF32, f32ArrayToBf16Bits, f32BitsToBf16Bits, f32ToBf16Bits, roundBf16, roundBf16Array, roundBf16Tensor } from "../src/nn/quant.ts";
import { conv2dBf16, linearBf16, prepareConv2dBf16, prepareLinearBf16 } from "../src/nn/bf16.ts";
import { freeWeightTensors } from "../src/nn/pack.ts";
import type { Padding4 } from "../src/nn/pack.ts";
import { conv2dBf16Ref, linearBf16Ref } from "../src/nn/reference/lowp.ts";

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

function expectBits(got: Float32Array, want: Float32Array, what: string) {
  expect(got.length, `${what}: length`).toBe(want.length);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let first = -1, n = 0;
  for (let i = 0; i < g.length; i++)
    if (g[i] !== w[i]) {
      if (first < 0) first = i;
      n++;
    }
  if (first >= 0) throw new Error(`${what}: ${n} of ${g.length} differ; first at ${first}: got ${got[first]} (0x${g[first].toString(16)}), want ${want[first]} (0x${w[first].toString(16)})`);
}

const f32FromBits = (u: number) => new Float32Array(new Uint32Array([u]).buffer)[0];

describe("bf16 rounding", () => {
  it("known bit patterns", async () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie -> even (down)
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even (up)
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81); // above the tie
    expect(f32ToBf16Bits(-1)).toBe(0xbf80);
    expect(f32ToBf16Bits(0)).toBe(0x0000);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(3.4e38)).toBe(0x7f80); // rounds up past the largest bf16
    expect(f32ToBf16Bits(-3.4e38)).toBe(0xff80);
    expect(f32ToBf16Bits(3.3895313892515355e38)).toBe(0x7f7f); // largest finite bf16 stays
    expect(f32ToBf16Bits(Math.PI)).toBe(0x4049);
    expect(f32ToBf16Bits(0.1)).toBe(0x3dcd);
    expect(f32ToBf16Bits(NaN)).toBe(0x7fc0);
  });

  it("subnormals round like any other value", async () => {
    expect(f32BitsToBf16Bits(0x00000001)).toBe(0x0000); // smallest f32 subnormal -> 0
    expect(f32BitsToBf16Bits(0x00008000)).toBe(0x0000); // tie, even -> down
    expect(f32BitsToBf16Bits(0x00018000)).toBe(0x0002); // tie, odd -> up
    expect(f32BitsToBf16Bits(0x00008001)).toBe(0x0001);
    expect(f32BitsToBf16Bits(0x007fffff)).toBe(0x0080); // largest subnormal -> smallest normal
    expect(f32BitsToBf16Bits(0x80010000)).toBe(0x8001);
    expect(bf16BitsToF32(0x0001)).toBe(2 ** -133);
  });

  it("NaN stays NaN (quiet), payload-only-in-low-bits NaNs do not become Inf", async () => {
    for (const u of [0x7fc00000, 0x7f800001, 0x7f80ffff, 0xff800001, 0x7fffffff, 0xffc00000, 0x7fa00000]) {
      const b = f32BitsToBf16Bits(u);
      expect(Number.isNaN(bf16BitsToF32(b)), u.toString(16)).toBe(true);
      expect(b & 0x0040).toBe(0x0040);
      expect(b & 0x8000).toBe((u >>> 16) & 0x8000);
    }
    expect(f32BitsToBf16Bits(0x7fa00000)).toBe(0x7fe0);
  });

  it("bf16BitsToF32 and roundBf16", async () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0xc000)).toBe(-2);
    expect(Object.is(bf16BitsToF32(0x8000), -0)).toBe(true);
    expect(bf16BitsToF32(0x7f80)).toBe(Infinity);
    expect(roundBf16(1.00390625)).toBe(1);
    expect(roundBf16(1.01171875)).toBe(1.015625);
  });

  it("bf16_round_f32 kernel = TS rounding on random and special bit patterns (both builds, 1-4 threads)", async () => {
    const n = 4099;
    const r = rng(7);
    const u = new Uint32Array(n);
    for (let i = 0; i < n; i++) u[i] = (r() * 2 ** 32) >>> 0;
    const specials = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xff80ffff, 0x7f7fffff, 0x7f7f8000, 0x00008000, 0x00018000, 0x3f808000, 0x3f818000, 0x00000001];
    specials.forEach((s, i) => (u[i * 17] = s));
    const x = new Float32Array(u.buffer);
    const want = roundBf16Array(x);
    for (const simd of ["baseline", "relaxed"] as const)
      for (const threads of [1, 2, 4]) {
        const eng = await Engine.create({ simd, threads, memoryBytes: 32 << 20 });
        try {
          const t = eng.fromArray(x, [n]);
          expectBits(roundBf16Tensor(eng, t).f32(), want, `${simd}/${threads}`);
          roundBf16Tensor(eng, t, true);
          expectBits(t.f32(), want, `${simd}/${threads} in place`);
        } finally {
          eng.close();
        }
      }
    const bits = f32ArrayToBf16Bits(x);
    for (let i = 0; i < n; i++) if ((bits[i] << 16) >>> 0 !== new Uint32Array(want.buffer)[i]) throw new Error(`f32ArrayToBf16Bits ${i}`);
    expect(f32FromBits(0x3f808000)).toBe(1 + 2 ** -8);
  });
});

const CONFIGS = [
  { simd: "relaxed", threads: 1 },
  { simd: "relaxed", threads: 2 },
  { simd: "relaxed", threads: 4 },
  { simd: "baseline", threads: 1 },
  { simd: "baseline", threads: 2 },
  { simd: "baseline", threads: 4 },
] as const;

const engines = new Map<string, Engine>();
beforeAll(async () => {
  for (const c of CONFIGS) engines.set(`${c.simd}/${c.threads}`, await Engine.create({ simd: c.simd, threads: c.threads, memoryBytes: 96 << 20 }));
});
afterAll(() => engines.forEach((e) => e.close()));

const LINEAR_SHAPES: [M: number, K: number, N: number][] = [
  [1, 5, 3],
  [1, 64, 8],
  [7, 19, 13],
  [13, 32, 40],
  [50, 130, 17],
  [67, 320, 24],
  [2, 48, 70], // threads split the output by channel panels
];

describe("BF16 linear", () => {
  for (const [M, K, N] of LINEAR_SHAPES)
    it(`M=${M} K=${K} N=${N}: exact vs reference, all builds and thread counts`, async () => {
      const x = randArray(M * K, M * 1000 + K, -2, 2);
      const w = randArray(N * K, N * 77 + K, -0.3, 0.3);
      const bias = N % 2 ? randArray(N, N, -1, 1) : null;
      const want = linearBf16Ref(x, w, bias, M, K, N);
      for (const [key, eng] of engines) {
        const lw = prepareLinearBf16(eng, w, bias, N, K);
        const xt = eng.fromArray(x, [M, K]);
        const y = linearBf16(xt, lw);
        expect(y.shape).toEqual([M, N]);
        expectBits(y.f32(), want, key);
        expectBits(linearBf16(xt, lw, { kc: 7, mcT: 1 }).f32(), want, `${key} blocked`);
        expectBits(linearBf16(xt, lw, { kc: 7, mcT: 1, pb: 1 }).f32(), want, `${key} panel-blocked`);
        freeWeightTensors(lw);
      }
    });

  it("outputs are bf16 values and close to f32", async () => {
    const eng = engines.get("relaxed/2")!;
    const M = 10, K = 100, N = 12;
    const x = randArray(M * K, 3), w = randArray(N * K, 4, -0.1, 0.1);
    const y = linearBf16(eng.fromArray(x, [M, K]), prepareLinearBf16(eng, w, null, N, K)).f32();
    const u = new Uint32Array(y.buffer, y.byteOffset, y.length);
    for (const v of u) expect(v & 0xffff).toBe(0);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
        expect(Math.abs(y[m * N + n] - s)).toBeLessThan(0.02 * Math.max(1, Math.abs(s)));
      }
  });
});

interface ConvCase {
  B: number; H: number; W: number; cin: number; cout: number; k: number; stride: number; pad: Padding4;
}

const CONV_CASES: ConvCase[] = [
  { B: 2, H: 7, W: 9, cin: 3, cout: 5, k: 3, stride: 1, pad: [1, 1, 1, 1] },
  { B: 1, H: 9, W: 8, cin: 8, cout: 16, k: 3, stride: 2, pad: [1, 1, 1, 1] },
  { B: 1, H: 8, W: 8, cin: 12, cout: 9, k: 3, stride: 2, pad: [0, 0, 1, 1] },
  { B: 1, H: 6, W: 5, cin: 6, cout: 11, k: 1, stride: 1, pad: [0, 0, 0, 0] },
  { B: 1, H: 5, W: 7, cin: 32, cout: 20, k: 3, stride: 1, pad: [1, 1, 1, 1] },
  { B: 2, H: 4, W: 4, cin: 5, cout: 8, k: 3, stride: 1, pad: [2, 0, 1, 2] },
];

describe("BF16 conv2d", () => {
  for (const c of CONV_CASES)
    it(`B=${c.B} ${c.H}x${c.W} cin=${c.cin} cout=${c.cout} k=${c.k} s=${c.stride} pad=[${c.pad}]: exact, all builds and threads`, async () => {
      const { B, H, W, cin, cout, k, stride, pad } = c;
      const x = randArray(B * H * W * cin, H * 31 + cin, -1, 1.5);
      const w = randArray(cout * cin * k * k, cout * 13 + cin, -0.3, 0.3);
      const bias = randArray(cout, cout, -0.5, 0.5);
      const ref = conv2dBf16Ref(x, w, bias, { batch: B, h: H, w: W, cin, cout, kh: k, kw: k, stride, padding: pad });
      for (const [key, eng] of engines) {
        const cw = prepareConv2dBf16(eng, w, bias, { cout, cin, kh: k, kw: k }, { stride, padding: pad });
        const xt = eng.fromArray(x, [B, H, W, cin]);
        const y = conv2dBf16(xt, cw);
        expect(y.shape).toEqual([B, ref.ho, ref.wo, cout]);
        expectBits(y.f32(), ref.y, key);
        expectBits(conv2dBf16(xt, cw, { kc: 10, mcT: 1 }).f32(), ref.y, `${key} blocked`);
        expectBits(conv2dBf16(xt, cw, { kc: 10, mcT: 1, pb: 1 }).f32(), ref.y, `${key} panel-blocked`);
        freeWeightTensors(cw);
      }
    });
});

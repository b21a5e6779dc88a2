// Weight packing and cache blocking shared by the GEMM/conv ops of every precision, and the conv geometry
// types every conv weight carries. The kernels' side of these layouts is described in assembly/gemm.ts
// (FP32), gemm_bf16.ts and gemm_int8.ts; the tile sizes both sides use come from assembly/abi.ts.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { GEMM_MR, GEMM_NR, INT8_KGROUP, LOWP_PANEL } from "../../assembly/abi.ts";

export { GEMM_MR, GEMM_NR, LOWP_PANEL };

// ---------------------------------------------------------------------------------------------
// conv geometry

export type Padding4 = [top: number, left: number, bottom: number, right: number];

/** A conv layer's geometry, as every conv weight (any precision, or a switch) holds it. */
export interface ConvGeometry {
  readonly cout: number;
  readonly cin: number;
  readonly kh: number;
  readonly kw: number;
  readonly stride: number;
  /** Default padding [top, left, bottom, right]. */
  readonly padding: Padding4;
}

export interface ConvShape {
  cout: number;
  cin: number;
  kh: number;
  kw: number;
}

export interface ConvOptions {
  stride?: number;
  /** A number (all sides) or [top, left, bottom, right]. */
  padding?: number | Padding4;
}

/** A validated [top, left, bottom, right] padding (undefined: none). */
export function pad4(p: number | readonly number[] | undefined, what = "conv"): Padding4 {
  if (p === undefined) return [0, 0, 0, 0];
  const a = typeof p === "number" ? [p, p, p, p] : p;
  if (a.length !== 4 || !a.every((v) => Number.isInteger(v) && v >= 0))
    throw new RangeError(`${what}: padding must be 4 non-negative integers [top, left, bottom, right] (or one for all sides), got ${JSON.stringify(p)}`);
  return [a[0], a[1], a[2], a[3]];
}

/** Output size [Ho, Wo] of a conv of this geometry on an h x w input. */
export function convOutSize(g: Pick<ConvGeometry, "kh" | "kw" | "stride">, h: number, w: number, p: Padding4): [number, number] {
  return [Math.floor((h + p[0] + p[2] - g.kh) / g.stride) + 1, Math.floor((w + p[1] + p[3] - g.kw) / g.stride) + 1];
}

/** Checks x is NHWC with g.cin channels and the output is not empty; returns the sizes. */
export function convInputSizes(x: Tensor, g: Pick<ConvGeometry, "cin" | "kh" | "kw" | "stride">, p: Padding4, what: string) {
  if (x.shape.length !== 4 || x.shape[3] !== g.cin) throw new RangeError(`${what}: expected NHWC input [B, H, W, ${g.cin}] (cin = ${g.cin}), got [${x.shape}]`);
  const [B, H, W] = x.shape;
  const [Ho, Wo] = convOutSize(g, H, W, p);
  if (Ho < 1 || Wo < 1) throw new RangeError(`${what}: ${g.kh}x${g.kw} kernel with padding [${p}] does not fit input [${x.shape}]`);
  return { B, H, W, Ho, Wo };
}

export function checkDims(what: string, ...dims: number[]): void {
  for (const d of dims) if (!Number.isInteger(d) || d < 1) throw new RangeError(`${what}: invalid dimension ${d} in [${dims}]`);
}

/**
 * Torch conv weight [cout, cin, kh, kw] reordered to [cout, K] in the kernels' k order (ky, kx, ci), with
 * each tap's cin values padded to cinPadded (the INT8 kernels read whole k-groups of 4).
 */
export function convWeightToKOrder<T extends Float32Array | Int8Array | Uint16Array>(w: ArrayLike<number>, shape: ConvShape, cinPadded: number, out: T): T {
  const { cout, cin, kh, kw } = shape;
  const K = kh * kw * cinPadded;
  for (let n = 0; n < cout; n++)
    for (let ci = 0; ci < cin; ci++)
      for (let ky = 0; ky < kh; ky++)
        for (let kx = 0; kx < kw; kx++) out[n * K + (ky * kw + kx) * cinPadded + ci] = w[((n * cin + ci) * kh + ky) * kw + kx];
  return out;
}

// ---------------------------------------------------------------------------------------------
// FP32 panels (assembly/gemm.ts)

/** Number of packed FP32 panels for n output columns. */
export function panelsFor(n: number): number {
  return Math.ceil(n / GEMM_NR);
}

/**
 * Packs a weight [n, k] (row-major, out x in, k in kernel order) into GEMM_NR-column panels over k:
 * dst[(p * k + kk) * GEMM_NR + j] = src[(p * GEMM_NR + j) * k + kk]; dst must be zeroed (padding columns).
 */
export function packPanelsNK(dst: Float32Array, src: ArrayLike<number>, n: number, k: number): void {
  for (let col = 0; col < n; col++) {
    const p = (col / GEMM_NR) | 0;
    const j = col - p * GEMM_NR;
    const d0 = p * k * GEMM_NR + j;
    const s0 = col * k;
    for (let kk = 0; kk < k; kk++) dst[d0 + kk * GEMM_NR] = src[s0 + kk];
  }
}

/** Bias padded to the FP32 panel width (zeros if null), as an engine tensor. */
export function packBias(eng: Engine, bias: ArrayLike<number> | null, n: number, what: string): Tensor {
  if (bias && bias.length !== n) throw new Error(`${what}: expected bias of length ${n}, got ${bias.length}`);
  const t = eng.zeros([panelsFor(n) * GEMM_NR]);
  if (bias) t.f32().set(bias as ArrayLike<number>);
  return t;
}

/**
 * Cache blocking for the FP32 packed kernels: kc = K block (floats of K per pass; 0 = all of K), mcT = row
 * block in GEMM_MR-row tiles (0 = all of a thread's rows), pb = panel block (0 = the kernel's default).
 * Results do not depend on these.
 */
export function gemmBlocking(M: number, N: number, K: number): { kc: number; mcT: number; pb: number } {
  // Measured (bench/kernels-gemm.ts): up to K = 2880 (SD's 64x64 convs) one K block is as fast as any, and
  // row blocks of a few dozen tiles gain a few % on large M. Longer K (the 16x16 and 8x8 levels' convs,
  // K = 11520 / 23040) in blocks of about 1024 with panel blocks that fit in L2 (the kernel's pb default):
  // 2 threads 88 -> 101 GFLOP/s on 2x16x16x1280->1280.
  void M;
  void N;
  void GEMM_MR;
  const kc = K <= 2880 ? 0 : Math.ceil(K / Math.ceil(K / 1024));
  return { kc, mcT: Math.max(8, Math.min(128, Math.floor(65536 / Math.max(1, kc || K)))), pb: 0 };
}

// ---------------------------------------------------------------------------------------------
// INT8 / BF16 panels (assembly/gemm_int8.ts, gemm_bf16.ts)

/** Rounds n up to a multiple of the INT8 k-group (4). */
export function roundUp4(n: number): number {
  return Math.ceil(n / INT8_KGROUP) * INT8_KGROUP;
}

/** n rounded up to whole LOWP_PANEL-channel panels. */
export function lowpPadded(n: number): number {
  return Math.ceil(n / LOWP_PANEL) * LOWP_PANEL;
}

/**
 * Packs int8 weights q [N, K] (K = kp, already in kernel k order) into panels of 8 channels x k-groups of 4
 * (32 bytes; see assembly/gemm_int8.ts). Relaxed-dot layout: byte (p*K + (k & ~3))*8 + 4*j + (k & 3) holds
 * q[p*8 + j][k]; k-pair layout (i16 path): byte (p*K + (k & ~3))*8 + 16*(j >> 2) + 8*((k & 3) >> 1) +
 * 2*(j & 3) + (k & 1).
 */
export function packInt8Panels(q: Int8Array, N: number, K: number, kPairs = false): Int8Array {
  if (K % INT8_KGROUP) throw new RangeError("packInt8Panels: K must be a multiple of 4");
  const np = Math.ceil(N / LOWP_PANEL);
  const out = new Int8Array(np * K * LOWP_PANEL);
  for (let n = 0; n < N; n++) {
    const p = n >> 3, j = n & 7;
    for (let k = 0; k < K; k++) {
      const g = (p * K + (k & ~3)) * 8;
      out[kPairs ? g + 16 * (j >> 2) + 8 * ((k & 3) >> 1) + 2 * (j & 3) + (k & 1) : g + 4 * j + (k & 3)] = q[n * K + k];
    }
  }
  return out;
}

/** Packs bf16 bits b [N, K] into panels of 8 channels: (p*K + k)*8 + j holds b[p*8 + j][k]. */
export function packBf16Panels(b: Uint16Array, N: number, K: number): Uint16Array {
  const np = Math.ceil(N / LOWP_PANEL);
  const out = new Uint16Array(np * K * LOWP_PANEL);
  for (let n = 0; n < N; n++) {
    const p = n >> 3, j = n & 7;
    for (let k = 0; k < K; k++) out[(p * K + k) * 8 + j] = b[n * K + k];
  }
  return out;
}

/** An f32 tensor of np8 values: src (mapped) in the first n, zeros after (per-channel epilogue vectors). */
export function paddedF32(eng: Engine, src: ArrayLike<number> | null, n: number, np8: number, map: (v: number) => number = (v) => v): Tensor {
  const t = eng.zeros([np8], "f32");
  if (src) {
    if (src.length !== n) throw new RangeError(`bias has ${src.length} values, expected ${n}`);
    const v = t.f32();
    for (let i = 0; i < n; i++) v[i] = map(src[i]);
  }
  return t;
}

/** Tuning knobs of the INT8/BF16 kernels (defaults are fine); results never depend on them. */
export interface LowpRunOptions {
  /** K block (INT8: bytes of the padded K, BF16: elements); 0 = no blocking. */
  kc?: number;
  /** Row block in micro-tiles; 0 = no blocking. */
  mcT?: number;
  /** Panels (8 output channels) per panel block; 0 = the kernel's default (weights that fit in L2). */
  pb?: number;
}

/**
 * Effective blocking (opts over defaults, clamped like the kernels do) and a per-thread packing scratch
 * of mcT * 4 * kc * elemBytes bytes, allocated for the duration of fn.
 */
export function withPacking<T>(
  eng: Engine, M: number, K: number, def: { kc: number; mcT: number }, opts: LowpRunOptions, elemBytes: number, align4: boolean,
  fn: (kc: number, mcT: number, scratch: number, stride: number) => T,
): T {
  let kc = opts.kc ?? def.kc, mcT = opts.mcT ?? def.mcT;
  if (kc <= 0 || kc > K) kc = K;
  if (align4) kc = roundUp4(kc);
  const tiles = Math.ceil(M / 4);
  if (mcT <= 0 || mcT > tiles) mcT = tiles;
  const stride = (mcT * 4 * kc * elemBytes + 63) & ~63;
  const scratch = eng.alloc(Math.max(64, stride * eng.threads));
  try {
    return fn(kc, mcT, scratch, stride);
  } finally {
    eng.free(scratch);
  }
}

/** Frees every engine tensor a prepared weight object holds. */
export function freeWeightTensors(w: object): void {
  for (const v of Object.values(w)) if (v && typeof v === "object" && "free" in v && typeof (v as Tensor).free === "function") (v as Tensor).free();
}

// Elementwise FP32 kernels: broadcast add/mul, activations (SiLU, GELU, quick GELU), GEGLU, scale,
// nearest 2x upsampling and channel concatenation (NHWC). Each thread takes a contiguous range of
// the OUTPUT (whole vectors of 4 where the layout allows), so results do not depend on the thread count.
import { vecSplitStart, vecSplitEnd, splitStart, splitEnd, siluA4, gelu4 } from "./math";
import { BINARY_ADD_SCALED, UNARY_SILU, UNARY_GELU, UNARY_RELU } from "./abi";

/** out[i] = a[i] + b[i] */
export function add_f32(tid: i32, nt: i32, a: usize, b: usize, out: usize, n: i32): void {
  let i = vecSplitStart(n, tid, nt);
  const end = vecSplitEnd(n, tid, nt);
  for (; i + 4 <= end; i += 4) {
    const o = usize(i) << 2;
    v128.store(out + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < end; i++) {
    const o = usize(i) << 2;
    store<f32>(out + o, load<f32>(a + o) + load<f32>(b + o));
  }
}

// ---------------------------------------------------------------------------------------------
// Broadcast binary ops. a and out are [P, M, N]; b is [P, N] (b[p, n] is used for every m).
// This covers b of a's shape (P = 1, M = 1), a suffix ([C] against [..., C]: P = 1, N = C),
// [B,1,1,C] against [B,H,W,C] (P = B, M = H*W, N = C) and per-row scalars (N = 1).
// op BINARY_ADD_SCALED: out = a + s * b; op BINARY_MUL: out = a * b * s. (s = 1 is exact: 1 * b = b.)

@inline function binSeg(a: usize, b: usize, out: usize, len: i32, op: i32, s: f32): void {
  const sv = f32x4.splat(s);
  let j = 0;
  if (op == BINARY_ADD_SCALED) {
    for (; j + 4 <= len; j += 4) {
      const o = usize(j) << 2;
      v128.store(out + o, f32x4.add(v128.load(a + o), f32x4.mul(v128.load(b + o), sv)));
    }
    for (; j < len; j++) {
      const o = usize(j) << 2;
      store<f32>(out + o, load<f32>(a + o) + load<f32>(b + o) * s);
    }
  } else {
    for (; j + 4 <= len; j += 4) {
      const o = usize(j) << 2;
      v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(a + o), v128.load(b + o)), sv));
    }
    for (; j < len; j++) {
      const o = usize(j) << 2;
      store<f32>(out + o, load<f32>(a + o) * load<f32>(b + o) * s);
    }
  }
}

/** a, out: len floats; b: one scalar for all of them. */
@inline function binSegScalar(a: usize, bval: f32, out: usize, len: i32, op: i32, s: f32): void {
  let j = 0;
  if (op == BINARY_ADD_SCALED) {
    const bv = bval * s;
    const v = f32x4.splat(bv);
    for (; j + 4 <= len; j += 4) {
      const o = usize(j) << 2;
      v128.store(out + o, f32x4.add(v128.load(a + o), v));
    }
    for (; j < len; j++) {
      const o = usize(j) << 2;
      store<f32>(out + o, load<f32>(a + o) + bv);
    }
  } else {
    const bv = f32x4.splat(bval);
    const sv = f32x4.splat(s);
    for (; j + 4 <= len; j += 4) {
      const o = usize(j) << 2;
      v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(a + o), bv), sv));
    }
    for (; j < len; j++) {
      const o = usize(j) << 2;
      store<f32>(out + o, load<f32>(a + o) * bval * s);
    }
  }
}

export function binary_bcast_f32(tid: i32, nt: i32, a: usize, b: usize, out: usize, P: i32, M: i32, N: i32, op: i32, s: f32): void {
  if (N == 1) {
    // rows of M elements, one b value per row p; split rows of the flat [P*M] range
    const total = P * M;
    let i = vecSplitStart(total, tid, nt);
    const end = vecSplitEnd(total, tid, nt);
    while (i < end) {
      const p = i / M;
      const segEnd = min(end, (p + 1) * M);
      const o = usize(i) << 2;
      binSegScalar(a + o, load<f32>(b + (usize(p) << 2)), out + o, segEnd - i, op, s);
      i = segEnd;
    }
    return;
  }
  const total = P * M * N;
  let i = vecSplitStart(total, tid, nt);
  const end = vecSplitEnd(total, tid, nt);
  const MN = M * N;
  while (i < end) {
    const row = i / N; // row index over P*M
    const n0 = i - row * N;
    const segEnd = min(end, (row + 1) * N);
    const p = i / MN;
    const o = usize(i) << 2;
    binSeg(a + o, b + ((usize(p) * usize(N) + usize(n0)) << 2), out + o, segEnd - i, op, s);
    i = segEnd;
  }
}

// ---------------------------------------------------------------------------------------------
// Unary ops. op 0: x * sigmoid(alpha x) (SiLU with alpha = 1, quick GELU with alpha = 1.702);
// op 1: exact GELU; op 2: alpha * x; op 3: ReLU. In place (out == x) is fine.

/** ReLU: lanes <= 0 become +0, others (including NaN, as torch.relu) pass through. */
@inline function relu4(v: v128): v128 {
  const zero = f32x4.splat(0);
  return v128.bitselect(zero, v, f32x4.le(v, zero));
}

@inline function unaryTail(x: usize, out: usize, i: i32, end: i32, op: i32, av: v128): void {
  for (; i < end; i++) {
    const o = usize(i) << 2;
    const v = f32x4.splat(load<f32>(x + o));
    let r: v128;
    if (op == UNARY_SILU) r = siluA4(v, av);
    else if (op == UNARY_GELU) r = gelu4(v);
    else if (op == UNARY_RELU) r = relu4(v);
    else r = f32x4.mul(v, av);
    store<f32>(out + o, f32x4.extract_lane(r, 0));
  }
}

export function unary_f32(tid: i32, nt: i32, x: usize, out: usize, n: i32, op: i32, alpha: f32): void {
  let i = vecSplitStart(n, tid, nt);
  const end = vecSplitEnd(n, tid, nt);
  const av = f32x4.splat(alpha);
  if (op == UNARY_SILU) {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      v128.store(out + o, siluA4(v128.load(x + o), av));
    }
  } else if (op == UNARY_GELU) {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      v128.store(out + o, gelu4(v128.load(x + o)));
    }
  } else if (op == UNARY_RELU) {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      v128.store(out + o, relu4(v128.load(x + o)));
    }
  } else {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      v128.store(out + o, f32x4.mul(v128.load(x + o), av));
    }
  }
  unaryTail(x, out, i, end, op, av);
}

/** GEGLU: x [rows, 2N] -> out [rows, N], out[r, j] = x[r, j] * gelu(x[r, N + j]). */
export function geglu_f32(tid: i32, nt: i32, x: usize, out: usize, rows: i32, N: i32): void {
  const total = rows * N;
  let i = vecSplitStart(total, tid, nt);
  const end = vecSplitEnd(total, tid, nt);
  while (i < end) {
    const r = i / N;
    const j0 = i - r * N;
    const len = min(end, (r + 1) * N) - i;
    const h = x + ((usize(r) * usize(2 * N) + usize(j0)) << 2);
    const g = h + (usize(N) << 2);
    const o = out + (usize(i) << 2);
    let j = 0;
    for (; j + 4 <= len; j += 4) {
      const k = usize(j) << 2;
      v128.store(o + k, f32x4.mul(v128.load(h + k), gelu4(v128.load(g + k))));
    }
    for (; j < len; j++) {
      const k = usize(j) << 2;
      const gv = f32x4.extract_lane(gelu4(f32x4.splat(load<f32>(g + k))), 0);
      store<f32>(o + k, load<f32>(h + k) * gv);
    }
    i += len;
  }
}

// ---------------------------------------------------------------------------------------------
// Layout ops (NHWC).

@inline function copyF32(src: usize, dst: usize, n: i32): void {
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const o = usize(j) << 2;
    v128.store(dst + o, v128.load(src + o));
  }
  for (; j < n; j++) {
    const o = usize(j) << 2;
    store<f32>(dst + o, load<f32>(src + o));
  }
}

/** Nearest-neighbour 2x upsampling: x [B,H,W,C] -> out [B,2H,2W,C]. Threads split output rows. */
export function upsample2x_f32(tid: i32, nt: i32, x: usize, out: usize, B: i32, H: i32, W: i32, C: i32): void {
  const rows = B * 2 * H;
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const rowOut = usize(2 * W) * usize(C);
  const rowIn = usize(W) * usize(C);
  for (let r = r0; r < r1; r++) {
    const b = r / (2 * H);
    const oh = r - b * 2 * H;
    const src = x + ((usize(b * H + (oh >> 1)) * rowIn) << 2);
    const dst = out + ((usize(r) * rowOut) << 2);
    for (let w = 0; w < W; w++) {
      const s = src + ((usize(w) * usize(C)) << 2);
      const d = dst + ((usize(2 * w) * usize(C)) << 2);
      copyF32(s, d, C);
      copyF32(s, d + (usize(C) << 2), C);
    }
  }
}

/** Channel concatenation: a [P, ca], b [P, cb] -> out [P, ca + cb]. Threads split positions. */
export function concat_channels_f32(tid: i32, nt: i32, a: usize, b: usize, out: usize, P: i32, ca: i32, cb: i32): void {
  const p0 = splitStart(P, tid, nt);
  const p1 = splitEnd(P, tid, nt);
  const co = ca + cb;
  for (let p = p0; p < p1; p++) {
    const d = out + ((usize(p) * usize(co)) << 2);
    copyF32(a + ((usize(p) * usize(ca)) << 2), d, ca);
    copyF32(b + ((usize(p) * usize(cb)) << 2), d + (usize(ca) << 2), cb);
  }
}

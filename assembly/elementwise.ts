// Elementwise kernels over float32, split into contiguous per-thread ranges of whole vectors.

/** Range [begin, end) of n items for thread tid of nt, in multiples of 4 so SIMD stays aligned to the split. */
@inline function shareOf(n: i32, tid: i32, nt: i32): i64 {
  const blocks = (n + 3) >> 2;
  const per = blocks / nt;
  const rem = blocks % nt;
  const b0 = tid * per + min(tid, rem);
  const b1 = b0 + per + (tid < rem ? 1 : 0);
  const begin = min(b0 << 2, n);
  const end = min(b1 << 2, n);
  return (i64(begin) << 32) | i64(end);
}

/** out[i] = a[i] + b[i] */
export function add_f32(tid: i32, nt: i32, a: usize, b: usize, out: usize, n: i32): void {
  const r = shareOf(n, tid, nt);
  let i = i32(r >> 32);
  const end = i32(r & 0xffffffff);
  for (; i + 4 <= end; i += 4) {
    const o = usize(i) << 2;
    v128.store(out + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < end; i++) {
    const o = usize(i) << 2;
    store<f32>(out + o, load<f32>(a + o) + load<f32>(b + o));
  }
}

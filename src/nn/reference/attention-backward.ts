// Plain-TypeScript references (f64) of the attention and softmax backward kernels
// (assembly/attention_backward.ts), and f64 forwards to check them against finite differences.

type Arr = ArrayLike<number>;

/** Multi-head attention forward in f64: q [B,Lq,H*D], k/v [B,Lk,H*D]; causal masks j > i. out and lse [B,H,Lq]. */
export function attentionF64(q: Arr, k: Arr, v: Arr, B: number, Lq: number, Lk: number, H: number, D: number, scale = 1 / Math.sqrt(D), causal = false) {
  const HD = H * D;
  const out = new Float64Array(B * Lq * HD);
  const lse = new Float64Array(B * H * Lq);
  const p = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        const nk = causal ? Math.min(Lk, i + 1) : Lk;
        let m = -Infinity;
        for (let j = 0; j < nk; j++) {
          let d = 0;
          for (let t = 0; t < D; t++) d += q[(b * Lq + i) * HD + h * D + t] * k[(b * Lk + j) * HD + h * D + t];
          p[j] = d * scale;
          m = Math.max(m, p[j]);
        }
        let sum = 0;
        for (let j = 0; j < nk; j++) sum += p[j] = Math.exp(p[j] - m);
        lse[(b * H + h) * Lq + i] = m + Math.log(sum);
        for (let t = 0; t < D; t++) {
          let acc = 0;
          for (let j = 0; j < nk; j++) acc += p[j] * v[(b * Lk + j) * HD + h * D + t];
          out[(b * Lq + i) * HD + h * D + t] = acc / sum;
        }
      }
  return { out, lse };
}

/**
 * Attention backward: dO [B,Lq,H*D] and the forward's inputs. Recomputes P per row (f64) and returns
 * dq [B,Lq,H*D], dk, dv [B,Lk,H*D]: dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(dO o O)),
 * dQ = scale dS K, dK = scale dS^T Q.
 */
export function refAttentionBackward(dO: Arr, q: Arr, k: Arr, v: Arr, B: number, Lq: number, Lk: number, H: number, D: number, scale = 1 / Math.sqrt(D), causal = false) {
  const HD = H * D;
  const dq = new Float64Array(B * Lq * HD);
  const dk = new Float64Array(B * Lk * HD);
  const dv = new Float64Array(B * Lk * HD);
  const p = new Float64Array(Lk);
  const dp = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        const qi = (b * Lq + i) * HD + h * D;
        const nk = causal ? Math.min(Lk, i + 1) : Lk;
        let m = -Infinity;
        for (let j = 0; j < nk; j++) {
          let d = 0;
          for (let t = 0; t < D; t++) d += q[qi + t] * k[(b * Lk + j) * HD + h * D + t];
          p[j] = d * scale;
          m = Math.max(m, p[j]);
        }
        let sum = 0;
        for (let j = 0; j < nk; j++) sum += p[j] = Math.exp(p[j] - m);
        for (let j = 0; j < nk; j++) p[j] /= sum;
        // Di = rowsum(dO o O) = sum_j P_ij dP_ij
        let Di = 0;
        for (let j = 0; j < nk; j++) {
          const kj = (b * Lk + j) * HD + h * D;
          let d = 0;
          for (let t = 0; t < D; t++) d += dO[qi + t] * v[kj + t];
          dp[j] = d;
          Di += p[j] * d;
        }
        for (let j = 0; j < nk; j++) {
          const kj = (b * Lk + j) * HD + h * D;
          const ds = p[j] * (dp[j] - Di);
          for (let t = 0; t < D; t++) {
            dv[kj + t] += p[j] * dO[qi + t];
            dk[kj + t] += scale * ds * q[qi + t];
            dq[qi + t] += scale * ds * k[kj + t];
          }
        }
      }
  return { dq, dk, dv };
}

/** Softmax over rows of N in f64. */
export function softmaxF64(x: Arr, rows: number, N: number): Float64Array {
  const out = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < N; j++) m = Math.max(m, x[r * N + j]);
    let s = 0;
    for (let j = 0; j < N; j++) s += out[r * N + j] = Math.exp(x[r * N + j] - m);
    for (let j = 0; j < N; j++) out[r * N + j] /= s;
  }
  return out;
}

/** Softmax backward from the output y: dx = y o (dy - sum(dy o y)) per row. */
export function refSoftmaxBackward(y: Arr, dy: Arr, rows: number, N: number): Float64Array {
  const dx = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < N; j++) s += dy[r * N + j] * y[r * N + j];
    for (let j = 0; j < N; j++) dx[r * N + j] = y[r * N + j] * (dy[r * N + j] - s);
  }
  return dx;
}

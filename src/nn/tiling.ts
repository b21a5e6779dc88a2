// How the kernels cut their work, where the ops (forward and backward) must agree with them: GroupNorm
// statistics tiles, attention key tiles and scratch, and the broadcast plan of the binary ops. The kernels
// compute the same sizes (test/abi.test.ts compares them).
import { ATT_BQ, ATT_BWD_KB, ATT_BWD_SPS } from "../../assembly/abi.ts";

export { ATT_BQ };

/** Keys per tile for head dim D (the kernel computes the same: test/abi.test.ts). */
export function attBK(D: number): number {
  return D <= 48 ? 128 : D <= 96 ? 64 : 32;
}

/** Scratch floats one thread of attention_f32 uses for head dim D. */
export function attScratchFloats(D: number): number {
  const Dp = (D + 7) & ~7;
  const ATT_BK = attBK(D);
  return 2 * Dp * ATT_BK + 2 * ATT_BQ * Dp + 4 * 128 + 2 * ATT_BQ + 16;
}

/** Number of GroupNorm statistics tiles for HW positions (the kernel computes the same: test/abi.test.ts). */
export function gnTiles(HW: number): number {
  const t = Math.max(64, Math.floor((HW + 255) / 256));
  return Math.max(1, Math.ceil(HW / t));
}

/** Rows per LayerNorm-backward partial-sum block (the kernel computes the same: test/abi.test.ts). */
export function lnBlockRows(rows: number): number {
  return Math.max(32, Math.floor((rows + 255) / 256));
}

/** Attention backward: queries per tile for head dim D (the kernel computes the same: test/abi.test.ts). */
export function attBwdQTile(D: number): number {
  return D <= 24 ? 128 : D <= 48 ? 64 : D <= 96 ? 32 : 16;
}

/** Attention backward: per-thread scratch floats before the dQ accumulator (the kernel's fixedFloats). */
export function attBwdFixedFloats(D: number): number {
  const Dp = (D + 7) & ~7;
  const bqa = attBwdQTile(D);
  return 5 * ATT_BWD_KB * Dp + 4 * bqa * Dp + 4 * ATT_BWD_SPS + ATT_BWD_KB * ATT_BWD_SPS + 2 * bqa + 16;
}

/**
 * Scratch floats one thread of attention_backward_f32 uses for head dim D and Lq queries: the packed key
 * block and query tile, the score buffers, and the dQ accumulator [Lq rounded up to 4, Dp].
 */
export function attBwdScratchFloats(D: number, Lq: number): number {
  return attBwdFixedFloats(D) + ((Lq + 3) & ~3) * ((D + 7) & ~7);
}

/**
 * How b broadcasts over a: a viewed as [P, M, N] and b as [P, N] (b[p, n] used for every m).
 * b's shape is right-aligned against a's (missing leading dims are 1); after dropping dims where both
 * are 1, the dims must read: equal dims (P), then dims where b is 1 (M), then equal dims (N). That
 * covers same shape, suffixes ([C], [1,C] against [...,C]), [B,1,1,C] against [B,H,W,C], [B,1,C]
 * against [B,L,C] and per-position scalars ([B,H,W,1]). Anything else throws.
 */
export function broadcastPlan(aShape: readonly number[], bShape: readonly number[], op = "broadcast"): { P: number; M: number; N: number } {
  const fail = (why: string) => new Error(`${op}: cannot broadcast b [${bShape}] over a [${aShape}]: ${why}`);
  if (bShape.length > aShape.length) throw fail("b has more dims than a");
  const pad = aShape.length - bShape.length;
  let P = 1, M = 1, N = 1;
  let phase = 0; // 0: leading equal dims, 1: broadcast dims, 2: trailing equal dims
  for (let i = 0; i < aShape.length; i++) {
    const ad = aShape[i];
    const bd = i < pad ? 1 : bShape[i - pad];
    if (ad === bd && ad === 1) continue;
    if (ad === bd) {
      if (phase === 0) P *= ad;
      else {
        phase = 2;
        N *= ad;
      }
    } else if (bd === 1) {
      if (phase === 2) throw fail("only one run of broadcast dims is supported (pattern equal*, 1*, equal*)");
      phase = 1;
      M *= ad;
    } else {
      throw fail(`dim ${i} is ${ad} in a but ${bd} in b`);
    }
  }
  if (phase === 0) {
    // b has a's shape: one flat row
    N = P;
    P = 1;
  }
  return { P, M, N };
}


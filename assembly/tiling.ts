// Work cuts that more than one kernel file uses (forward and backward must cut alike). Internal: not
// re-exported by index.ts; src/nn/tiling.ts computes the same sizes (test/abi.test.ts compares them through
// the abi_* exports).

// @ts-nocheck (AssemblyScript)

/**
 * Spatial positions per GroupNorm statistics tile: 64, or more for very large maps so there are at
 * most 256 tiles (bounds the partial-sum buffer). Depends only on HW, never on the thread count.
 */
@inline export function gnTileLen(HW: i32): i32 {
  return max(64, (HW + 255) / 256);
}

/** Number of GroupNorm statistics tiles for HW positions. */
@inline export function gnTiles(HW: i32): i32 {
  const t = gnTileLen(HW);
  return max(1, (HW + t - 1) / t);
}

/** Rows per LayerNorm-backward partial-sum block: 32, more for very many rows (at most 256 blocks). */
@inline export function lnBlockRows(rows: i32): i32 {
  return max(32, (rows + 255) / 256);
}

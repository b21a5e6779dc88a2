// The contract between the kernels (assembly/) and the ops that call them (src/nn): tile sizes, op codes
// and flag bits that both sides must agree on. This file is plain TypeScript that AssemblyScript also
// compiles (integer constants only, no AS types), so both sides import the same values; the few sizes that
// are functions (keys per attention tile, GroupNorm tiles, LayerNorm-backward blocks, attention-backward
// query tiles and scratch) are computed on both sides and compared by
// test/abi.test.ts through the abi_* exports, and Engine.run checks every call's argument count against the
// kernel's signature.

/** FP32 GEMM: columns per packed weight panel (four f32x4 vectors) and rows per micro-tile. */
export const GEMM_NR = 16;
export const GEMM_MR = 2;

/** INT8 / BF16 GEMM: output channels per packed weight panel; INT8 k-group (bytes per dot lane). */
export const LOWP_PANEL = 8;
export const INT8_KGROUP = 4;

/** INT8 kernel flags. */
export const INT8_FLAG_I16 = 1; // exact i16 path (baseline build, or activations above 127)
export const INT8_FLAG_RAW = 2; // store the i32 accumulators instead of f32 outputs
export const INT8_FLAG_FUSED = 4; // relaxed build: one fused relaxed dot per k-group
export const INT8_FLAG_SPLAT_LOAD = 8; // relaxed build: activations by broadcast loads instead of shuffles

/** peak_dot_i8: bytes of its `out` buffer per thread (16-byte checksum + 12 operand vectors). */
export const PEAK_DOT_STRIDE = 256;

/** unary_f32 op codes. */
export const UNARY_SILU = 0; // x * sigmoid(alpha * x) (alpha 1: SiLU, 1.702: quick GELU)
export const UNARY_GELU = 1; // exact erf GELU
export const UNARY_SCALE = 2; // alpha * x
export const UNARY_RELU = 3;

/** binary_bcast_f32 op codes. */
export const BINARY_ADD_SCALED = 0; // a + s * b
export const BINARY_MUL = 1; // a * b * s

/** Attention: queries per work unit. */
export const ATT_BQ = 64;

/** Attention backward: keys per key block, and the row stride (floats) of its score buffers (at least the largest query tile). */
export const ATT_BWD_KB = 64;
export const ATT_BWD_SPS = 128;

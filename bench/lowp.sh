#!/bin/sh
# INT8 / BF16 GEMM and conv benchmark: bench/kernels-lowp.ts, run by bench/run-ts.sh.
# Usage: sh bench/lowp.sh [--quick] [--threads=1,2] [--only=substring] [--prec=int8,bf16,f32] [--simd=relaxed,baseline] [--kc=N --mc=N --pb=N] [--dot=auto|fused|split]
# Runtime: NODE=/path/to/node (default node; relaxed SIMD is flagged on Node 20, standard on Node 22+),
# or RUNTIME=deno (npx deno, V8 flag --no-liftoff).
exec sh "$(dirname "$0")/run-ts.sh" kernels-lowp "$@"

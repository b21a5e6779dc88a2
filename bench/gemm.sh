#!/bin/sh
# FP32 GEMM / conv benchmark (bench/kernels-gemm.ts, or bench/peak.ts), run by bench/run-ts.sh.
# Usage: sh bench/gemm.sh [--quick] [--min-time=S] [--only=REGEX] [--wait=S] [--kc=N] [--mc=N] [--pb=N]   GEMM / linear / conv table, bench/results/gemm.json
#        sh bench/gemm.sh peak [--threads=N]              f32 SIMD peak only
# Runtime: NODE=/path/to/node (default node).
script=kernels-gemm
if [ "$1" = "peak" ]; then script=peak; shift; fi
exec sh "$(dirname "$0")/run-ts.sh" "$script" "$@"

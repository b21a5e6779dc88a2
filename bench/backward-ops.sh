#!/bin/sh
# Backward-op benchmark (GroupNorm, LayerNorm, fused attention, a few elementwise ops), each next to its
# forward: bench/kernels-backward-ops.ts, run by bench/run-ts.sh.
# Usage: sh bench/backward-ops.sh [--quick] [--threads=1,2] [--rounds=N] [--only=attention] [--simd=relaxed]
# Runtime: NODE=/path/to/node (default node).
exec sh "$(dirname "$0")/run-ts.sh" kernels-backward-ops "$@"

#!/bin/sh
# FP32 op benchmark (GroupNorm, attention, LayerNorm, GEGLU, ...): bench/kernels-ops.ts, run by bench/run-ts.sh.
# Usage: sh bench/ops.sh [--quick] [--threads=1,2] [--rounds=N] [--only=attention]
# (--rounds=N repeats the whole matrix and keeps each cell's best: use it when the machine is shared)
# Runtime: NODE=/path/to/node (default node).
exec sh "$(dirname "$0")/run-ts.sh" kernels-ops "$@"

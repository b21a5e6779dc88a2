#!/bin/sh
# Backward (dX, dW) of linear / conv2d next to the forward on the same shapes: bench/kernels-backward-dense.ts,
# run by bench/run-ts.sh. Usage: sh bench/backward-dense.sh [--quick] [--only=REGEX] [--mc=N] [--simd=relaxed|baseline|both]
# Runtime: NODE=/path/to/node (default node).
exec sh "$(dirname "$0")/run-ts.sh" kernels-backward-dense "$@"

#!/bin/sh
# Where the INT8 error comes from: activations only, weights only, both (bench/int8-error-split.ts, run by
# bench/run-ts.sh). Usage: sh bench/int8-error-split.sh --ref=FP32.safetensors [--n=100]
#   [--mode=act|weight|both|int8|fp32] [--layers=REGEX] [--calibration=FILE] [--model=DIR] [--smooth=ALPHA]
# Runtime: NODE=/path/to/node (default node).
exec sh "$(dirname "$0")/run-ts.sh" int8-error-split "$@"

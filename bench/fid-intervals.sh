#!/bin/sh
# FID with bootstrap 95% intervals, prompt accuracy and PSNR intervals of `stepq eval --save-images` files
# (bench/fid-intervals.ts, run by bench/run-ts.sh). Usage: sh bench/fid-intervals.sh [--resamples=N]
#   [--ref=FP32.safetensors] [--baseline=B.safetensors] [--json=FILE] A.safetensors [B.safetensors ...]
# Runtime: NODE=/path/to/node (default node).
exec sh "$(dirname "$0")/run-ts.sh" fid-intervals "$@"

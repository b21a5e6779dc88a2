#!/bin/sh
# FP32 GEMM / conv benchmark: builds the kernels, bundles bench/kernels-gemm.ts and runs it.
# Usage: sh bench/gemm.sh [--quick] [--kc=N] [--mc=N]
set -e
cd "$(dirname "$0")/.."
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-gemm.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-gemm.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec node --experimental-wasm-relaxed-simd --no-liftoff build/bench/kernels-gemm.mjs "$@"

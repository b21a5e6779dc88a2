#!/bin/sh
# INT8 / BF16 GEMM and conv benchmark: builds the kernels, bundles bench/kernels-lowp.ts and runs it.
# Usage: sh bench/lowp.sh [--quick] [--threads=1,2] [--only=substring] [--prec=int8,bf16,f32] [--simd=relaxed,baseline] [--kc=N --mc=N --pb=N]
set -e
cd "$(dirname "$0")/.."
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-lowp.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-lowp.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec node --experimental-wasm-relaxed-simd --no-liftoff build/bench/kernels-lowp.mjs "$@"

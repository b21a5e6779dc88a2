#!/bin/sh
# Backward-op benchmark (GroupNorm, LayerNorm, fused attention, a few elementwise ops), each next to its
# forward: builds the kernels, bundles bench/kernels-backward-ops.ts and runs it.
# Usage: sh bench/backward-ops.sh [--quick] [--threads=1,2] [--rounds=N] [--only=attention] [--simd=relaxed]
set -e
cd "$(dirname "$0")/.."
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-backward-ops.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-backward-ops.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec node --experimental-wasm-relaxed-simd --no-liftoff build/bench/kernels-backward-ops.mjs "$@"

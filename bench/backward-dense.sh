#!/bin/sh
# Backward (dX, dW) of linear / conv2d next to the forward on the same shapes: builds the kernels, bundles
# bench/kernels-backward-dense.ts with esbuild and runs it. Usage: sh bench/backward-dense.sh [--quick] [--only=REGEX] [--mc=N] [--simd=relaxed|baseline|both]
set -e
cd "$(dirname "$0")/.."
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-backward-dense.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-backward-dense.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec node --experimental-wasm-relaxed-simd --no-liftoff build/bench/kernels-backward-dense.mjs "$@"

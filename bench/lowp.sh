#!/bin/sh
# INT8 / BF16 GEMM and conv benchmark: builds the kernels, bundles bench/kernels-lowp.ts and runs it.
# Usage: sh bench/lowp.sh [--quick] [--threads=1,2] [--only=substring] [--prec=int8,bf16,f32] [--simd=relaxed,baseline] [--kc=N --mc=N --pb=N] [--dot=auto|fused|split]
# Runtime: NODE=/path/to/node (default node; relaxed SIMD is flagged on Node 20/22, standard on Node 24),
# or RUNTIME=deno (npx deno, V8 flag --no-liftoff).
set -e
cd "$(dirname "$0")/.."
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-lowp.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-lowp.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
if [ "${RUNTIME:-node}" = deno ]; then
  exec node_modules/.bin/deno run -A --v8-flags=--no-liftoff build/bench/kernels-lowp.mjs "$@"
fi
NODE=${NODE:-node}
RELAXED_FLAG=
if "$NODE" --experimental-wasm-relaxed-simd -e 0 2>/dev/null; then RELAXED_FLAG=--experimental-wasm-relaxed-simd; fi
exec "$NODE" $RELAXED_FLAG --no-liftoff build/bench/kernels-lowp.mjs "$@"

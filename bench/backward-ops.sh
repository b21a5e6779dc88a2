#!/bin/sh
# Backward-op benchmark (GroupNorm, LayerNorm, fused attention, a few elementwise ops), each next to its
# forward: builds the kernels, bundles bench/kernels-backward-ops.ts and runs it.
# Usage: sh bench/backward-ops.sh [--quick] [--threads=1,2] [--rounds=N] [--only=attention] [--simd=relaxed]
set -e
cd "$(dirname "$0")/.."
# the V8 flags this Node needs for the engine (bin/engine-flags.js), plus --no-liftoff so a long kernel call
# never stays in the baseline tier during a measurement
FLAGS=$(node --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-backward-ops.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-backward-ops.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec node $FLAGS build/bench/kernels-backward-ops.mjs "$@"

#!/bin/sh
# FP32 GEMM / conv benchmark: builds the kernels, bundles the bench script with esbuild and runs it.
# Usage: sh bench/gemm.sh [--quick] [--min-time=S] [--only=REGEX] [--wait=S] [--kc=N] [--mc=N] [--pb=N]   GEMM / linear / conv table, bench/results/gemm.json
#        sh bench/gemm.sh peak [--threads=N]              f32 SIMD peak only
set -e
cd "$(dirname "$0")/.."
# the V8 flags this Node needs for the engine (bin/engine-flags.js), plus --no-liftoff so a long kernel call
# never stays in the baseline tier during a measurement
FLAGS=$(node --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
script=kernels-gemm
if [ "$1" = "peak" ]; then script=peak; shift; fi
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild "bench/$script.ts" --bundle --platform=node --format=esm --target=node20 --outfile="build/bench/$script.mjs" --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec node $FLAGS "build/bench/$script.mjs" "$@"

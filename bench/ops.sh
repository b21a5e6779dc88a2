#!/bin/sh
# FP32 op benchmark (GroupNorm, attention, LayerNorm, GEGLU, ...): builds the kernels, bundles
# bench/kernels-ops.ts and runs it. Usage: sh bench/ops.sh [--quick] [--threads=1,2] [--rounds=N] [--only=attention]
# (--rounds=N repeats the whole matrix and keeps each cell's best: use it when the machine is shared)
set -e
cd "$(dirname "$0")/.."
# the V8 flags this Node needs for the engine (bin/engine-flags.js), plus --no-liftoff so a long kernel call
# never stays in the baseline tier during a measurement
# Runtime: NODE=/path/to/node (default node).
NODE=${NODE:-node}
FLAGS=$("$NODE" --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/kernels-ops.ts --bundle --platform=node --format=esm --target=node20 --outfile=build/bench/kernels-ops.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec "$NODE" $FLAGS build/bench/kernels-ops.mjs "$@"

#!/bin/sh
# FID with bootstrap 95% intervals, prompt accuracy and PSNR intervals of `stepq eval --save-images` files
# (bench/fid-intervals.ts). Usage: sh bench/fid-intervals.sh [--resamples=N] [--ref=FP32.safetensors]
#   [--baseline=B.safetensors] [--json=FILE] A.safetensors [B.safetensors ...]
# Runtime: NODE=/path/to/node (default node); the engine flags that Node needs (bin/engine-flags.js).
set -e
cd "$(dirname "$0")/.."
NODE=${NODE:-node}
FLAGS=$("$NODE" --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/fid-intervals.ts --bundle --platform=node --format=esm --target=node20 --packages=external --outfile=build/bench/fid-intervals.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec "$NODE" $FLAGS build/bench/fid-intervals.mjs "$@"

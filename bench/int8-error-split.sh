#!/bin/sh
# Where the INT8 error comes from: activations only, weights only, both (bench/int8-error-split.ts).
# Runtime: NODE=/path/to/node (default node); the engine flags that Node needs (bin/engine-flags.js).
set -e
cd "$(dirname "$0")/.."
NODE=${NODE:-node}
FLAGS=$("$NODE" --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild bench/int8-error-split.ts --bundle --platform=node --format=esm --target=node20 --packages=external --outfile=build/bench/int8-error-split.mjs --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
exec "$NODE" $FLAGS build/bench/int8-error-split.mjs "$@"

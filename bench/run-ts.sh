#!/bin/sh
# Runs one TypeScript bench script: builds the kernels, bundles bench/NAME.ts with esbuild into build/bench/
# (next to a copy of the kernel worker) and runs it with the V8 flags this runtime needs for the engine
# (bin/engine-flags.js) plus --no-liftoff, so a long kernel call never stays in the baseline tier during a
# measurement. Usage: sh bench/run-ts.sh NAME [args...]
# Runtime: NODE=/path/to/node (default node), or RUNTIME=deno (node_modules/.bin/deno, --no-liftoff).
set -e
cd "$(dirname "$0")/.."
name=$1
shift
node scripts/build.mjs --wasm-only > /dev/null
mkdir -p build/bench
npx esbuild "bench/$name.ts" --bundle --platform=node --format=esm --target=node20 --packages=external --outfile="build/bench/$name.mjs" --log-level=warning
cp src/runtime/worker.js build/bench/worker.js
if [ "${RUNTIME:-node}" = deno ]; then
  exec node_modules/.bin/deno run -A --v8-flags=--no-liftoff "build/bench/$name.mjs" "$@"
fi
NODE=${NODE:-node}
FLAGS=$("$NODE" --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
exec "$NODE" $FLAGS "build/bench/$name.mjs" "$@"

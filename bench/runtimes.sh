#!/bin/sh
# How Node and Deno compile our kernels' loop shapes (docs/performance.md, "Deno is slower here"): the FP32
# GEMM inner loop (GFLOP/s, one thread) and 8 multiply chains by a SIMD constant written as v128.const or
# loaded from memory (ns per iteration), under each engine with and without explicit bounds checks.
# Usage: sh bench/runtimes.sh
set -e
cd "$(dirname "$0")/.."
# the V8 flags this Node needs for the engine (bin/engine-flags.js), plus --no-liftoff so a long kernel call
# never stays in the baseline tier during a measurement
FLAGS=$(node --input-type=module -e 'import { engineFlags } from "./bin/engine-flags.js"; console.log([...new Set([...engineFlags(), "--no-liftoff"])].join(" "))')
mkdir -p build/bench
npx asc bench/runtimes/loops.ts --config bench/runtimes/asconfig.json --enable simd,relaxed-simd -O3 --runtime stub --importMemory -o build/bench/runtime-loops.wasm
deno=node_modules/.bin/deno
printf '%-52s %8s %10s %10s\n' "engine, flags" "GEMM GF/s" "const ns" "loaded ns"
node $FLAGS bench/runtimes/run.mjs "node $(node --version) --no-liftoff"
node $FLAGS --wasm-enforce-bounds-checks bench/runtimes/run.mjs "node --no-liftoff --wasm-enforce-bounds-checks"
$deno run -A --v8-flags=--no-liftoff bench/runtimes/run.mjs "deno $($deno --version | head -1 | cut -d' ' -f2) --no-liftoff"
$deno run -A --v8-flags=--no-liftoff,--no-wasm-bounds-checks bench/runtimes/run.mjs "deno --no-liftoff --no-wasm-bounds-checks (unsafe)"

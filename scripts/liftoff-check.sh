#!/usr/bin/env bash
# Does V8's baseline wasm compiler (Liftoff) change stepq's results or its speed on a runtime? The measurement
# behind bin/engine-flags.js (which flags the launcher passes) and the README's Deno command.
#
# Correctness: `generate --prompt "a photo of a sneaker" --seed 1` (fashion-sd-tiny, 50 steps) for fp32, bf16,
# int8 and mixed:5 at 1 and 2 threads, under V8's default tiering (Liftoff first, TurboFan once hot),
# --no-liftoff (TurboFan only) and --liftoff-only. Prints the SIMD build and the PNG hash of every run; fails if
# two relaxed-SIMD runs of the same precision differ.
# --time: also one SD 1.5 UNet call pair (`bench unet --config sd15 --warmup 0 --iters 2`, random weights,
# about a minute each) for int8 and fp32, default tiering vs --no-liftoff: a kernel call runs in the tier it
# started in, so the first calls of the big kernels may run in Liftoff.
#
# Usage: scripts/liftoff-check.sh [--time] RUNTIME...   (node or deno binaries; run under flock /work/cpu.lock)
# Example: scripts/liftoff-check.sh --time /work/tools/node24 /work/tools/node22 node_modules/.bin/deno
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
time=0
[ "${1:-}" = --time ] && { time=1; shift; }
[ $# -gt 0 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# run RUNTIME V8FLAGS ARGS...: the CLI from dist/ under node, from src/ under deno, with V8FLAGS (space-separated)
run() {
  local rt=$1 flags=$2
  shift 2
  case $(basename "$rt") in
    deno*) "$rt" run -A ${flags:+--v8-flags=${flags// /,}} "$root/src/cli/main.ts" "$@" ;;
    *) local base=""
       # Node 20 has relaxed SIMD behind a flag (bin/engine-flags.js)
       [ "$("$rt" -p 'process.versions.node.split(".")[0]')" -le 20 ] && base=--experimental-wasm-relaxed-simd
       "$rt" $base $flags "$root/dist/cli.js" "$@" ;;
  esac
}

fail=0
for rt in "$@"; do
  name=$("$rt" --version | head -1)
  for p in fp32 bf16 int8 mixed:5; do
    ref=""
    for tier in "" --no-liftoff --liftoff-only; do
      for t in 1 2; do
        png=$out/x.png
        run "$rt" "$tier" generate --prompt "a photo of a sneaker" --seed 1 --precision "$p" --threads "$t" --out "$png" 2>"$out/log"
        simd=$(grep -o '[a-z]* SIMD' "$out/log" | head -1 || true)
        secs=$(sed -n 's/.*done in \([0-9.]*\) s.*/\1/p' "$out/log")
        sum=$(sha256sum "$png" | cut -c1-16)
        verdict=""
        if [ "$simd" = "relaxed SIMD" ]; then
          [ -z "$ref" ] && ref=$sum
          [ "$sum" = "$ref" ] || { verdict="  DIFFERS"; fail=1; }
        fi
        printf 'liftoff: %-16s %-8s %-15s %d thr  %-13s %5s s  %s%s\n' "$name" "$p" "${tier:-default}" "$t" "$simd" "$secs" "$sum" "$verdict"
      done
    done
  done
  if [ $time = 1 ]; then
    for p in int8 fp32; do
      for tier in "" --no-liftoff; do
        s=$(run "$rt" "$tier" bench unet --config sd15 --precision $p --threads 2 --warmup 0 --iters 2 --json 2>/dev/null |
          sed -n 's/.*"seconds":\[\([0-9.]*\),\([0-9.]*\)\].*/\1 \2/p' | awk '{printf "first call %.2f s, second %.2f s", $1, $2}')
        printf 'liftoff: %-16s sd15 UNet %-5s %-12s %s\n' "$name" $p "${tier:-default}" "$s"
      done
    done
  fi
done
[ $fail = 0 ] && echo "liftoff: every relaxed-SIMD run of a precision gave the same PNG"
exit $fail

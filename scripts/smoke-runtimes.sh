#!/usr/bin/env bash
# Smoke run of stepq under several runtimes, each the way a user runs it: Node through `npx stepq` (with that
# Node first on PATH, so npx and the launcher run on it), Deno through `deno run -A src/cli/main.ts`. For each:
# the README's generate command, then the golden verify (../shared, or $STEPQ_SHARED). Then checks that each
# runtime used the relaxed-SIMD build and that all wrote byte-identical PNGs. Needs `npm run build` first.
#
# Usage: scripts/smoke-runtimes.sh [NAME=PATH ...]
#   NAME starting with "deno": PATH is a deno binary; otherwise a node binary.
#   Default: node=$(command -v node) deno=node_modules/.bin/deno
#   SMOKE_VERIFY=full (default) | none
# Example (what .ci/run does): scripts/smoke-runtimes.sh node22=.ci/cache/node-22.23.5/bin/node node20=/usr/bin/node deno=node_modules/.bin/deno
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${STEPQ_SHARED:-$root/../shared}
[ $# -gt 0 ] || set -- "node=$(command -v node)" "deno=$root/node_modules/.bin/deno"
[ -f dist/cli.js ] && [ -f build/stepq-relaxed.wasm ] || { echo "smoke: run \`npm run build\` first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

fail=0
pngs=()
for spec in "$@"; do
  name=${spec%%=*}
  exe=$(realpath "${spec#*=}")
  case $name in
    deno*) version=$("$exe" --version | head -1 | cut -d' ' -f1-2)
           run=("$exe" run -A "$root/src/cli/main.ts") ;;
    *)     version="node $("$exe" --version)"
           run=(env PATH="$(dirname "$exe"):$PATH" npx --no-install stepq) ;;
  esac
  log=$out/$name.log
  start=$SECONDS
  if ! "${run[@]}" generate --prompt "a photo of a sneaker" --seed 1 --out "$out/$name.png" 2>"$log" ||
     ! "${run[@]}" generate --prompt "a photo of a sneaker" --seed 1 --precision mixed:5 --out "$out/$name-mixed.png" 2>>"$log"; then
    echo "smoke: FAIL $name ($version): generate failed:" >&2; tail -5 "$log" >&2; fail=1; continue
  fi
  gen_s=$((SECONDS - start))
  simd=$(grep -o '[a-z]* SIMD' "$log" | sort -u | tr '\n' ' ' || true)
  if [ "$simd" != "relaxed SIMD " ]; then echo "smoke: FAIL $name ($version): engine used ${simd:-?}, not relaxed SIMD" >&2; fail=1; fi
  verify="skipped"
  if [ "${SMOKE_VERIFY:-full}" != none ]; then
    if "${run[@]}" verify "$shared/golden" --models "$shared/models" -q >"$out/$name.verify" 2>&1; then
      verify=$(tail -1 "$out/$name.verify")
    else
      echo "smoke: FAIL $name ($version): verify failed:" >&2; tail -20 "$out/$name.verify" >&2; fail=1; verify=FAILED
    fi
  fi
  sums="$(sha256sum "$out/$name.png" | cut -c1-12) $(sha256sum "$out/$name-mixed.png" | cut -c1-12)"
  pngs+=("$name")
  printf 'smoke: %-7s %-16s %-13s 2 x generate %3d s  png fp32, mixed:5 %s  %s\n' "$name" "$version" "$simd" "$gen_s" "$sums" "$verify"
done

for n in "${pngs[@]:1}"; do
  for kind in "" -mixed; do
    if ! cmp -s "$out/${pngs[0]}$kind.png" "$out/$n$kind.png"; then
      echo "smoke: FAIL $n wrote a different PNG${kind:+ (mixed:5)} than ${pngs[0]}" >&2; fail=1
    fi
  done
done
[ $fail = 0 ] && echo "smoke: OK: ${#pngs[@]} runtimes, byte-identical PNGs (verify: ${SMOKE_VERIFY:-full})"
exit $fail

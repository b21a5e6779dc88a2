#!/usr/bin/env bash
# The npm package as a user gets it: `npm pack` (prepack builds), install the tarball into an empty folder
# outside the repo (nothing else installed: npm fetches pngjs, the one dependency), run the README's
# `npx stepq generate --prompt "a photo of a bag" --out bag.png` there under NODE (default: node on PATH),
# then check that only stepq and its runtime dependency were installed and that the PNG is byte-identical
# to the repo's CLI for the same arguments (the seed generate picked and printed). Also runs the installed
# package under Deno (`deno run -A npm:stepq`, resolved from that folder's node_modules).
#
# Usage: scripts/test-package.sh [NODE] [DENO]   (.ci/run passes its Node 24; DENO default node_modules/.bin/deno,
#        "none" to skip)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
node=$(realpath "${1:-$(command -v node)}")
deno=${2:-$root/node_modules/.bin/deno}
export PATH="$(dirname "$node"):$PATH"
unset STEPQ_SHARED
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "package: node $(node --version), npm $(npm --version)"
cd "$root"
tgz=$(npm pack --silent --pack-destination "$work" | tail -1)
echo "package: $tgz, $(du -k "$work/$tgz" | cut -f1) KiB"

mkdir "$work/app"
cd "$work/app"
npm install --silent --no-audit --no-fund --prefer-offline "$work/$tgz"
installed=$(ls node_modules | grep -v '^\.' | tr '\n' ' ')
if [ "$installed" != "pngjs stepq " ]; then
  echo "package: FAIL: expected only pngjs and stepq in node_modules, got: $installed" >&2; exit 1
fi

npx --no-install stepq generate --prompt "a photo of a bag" --out bag.png 2>gen.log || { cat gen.log >&2; exit 1; }
seed=$(sed -n 's/.* seed \([0-9][0-9]*\).*/\1/p' gen.log | head -1)
[ -n "$seed" ] || { echo "package: FAIL: no seed in the generate output:" >&2; cat gen.log >&2; exit 1; }
(cd "$root" && node bin/stepq.js generate --prompt "a photo of a bag" --seed "$seed" --out "$work/repo.png" -q)
cmp bag.png "$work/repo.png" || { echo "package: FAIL: the installed package's PNG differs from the repo CLI's (seed $seed)" >&2; exit 1; }
echo "package: OK: installed stepq generated bag.png (seed $seed) byte-identical to the repo's CLI"

if [ "$deno" != none ]; then
  "$deno" run -A npm:stepq generate --prompt "a photo of a bag" --seed "$seed" --out deno.png -q
  cmp deno.png "$work/repo.png" || { echo "package: FAIL: under Deno the installed package's PNG differs" >&2; exit 1; }
  echo "package: OK: deno run -A npm:stepq, same PNG"
fi

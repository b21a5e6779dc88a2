#!/usr/bin/env bash
# The npm package as a user gets it: `npm pack` (prepack builds), install the tarball into an empty folder
# outside the repo (nothing else installed: npm fetches pngjs and pako, the dependencies), run the README's
# `npx stepq generate --prompt "a photo of a bag" --out bag.png` there under NODE (default: node on PATH),
# then check that only stepq and its runtime dependency were installed and that the PNG is byte-identical
# to the repo's CLI for the same arguments (the seed generate picked and printed). Also runs the installed
# package under Deno (`deno run -A npm:stepq`, resolved from that folder's node_modules), and checks that
# the installed `stepq serve` serves the demo page, the browser bundle, the kernels and the model.
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
if [ "$installed" != "pako pngjs stepq " ]; then
  echo "package: FAIL: expected only pako, pngjs and stepq in node_modules, got: $installed" >&2; exit 1
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

# the demo server from the installed package: every file the page needs answers 200
# (the installed bin itself, not npx, so $! is the server and kill reaches it)
node_modules/.bin/stepq serve --port 0 >serve.out 2>serve.err &
serve_pid=$!
for _ in $(seq 100); do grep -q http serve.out && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' serve.out | head -1)
[ -n "$url" ] || { echo "package: FAIL: stepq serve printed no URL:" >&2; cat serve.err >&2; kill "$serve_pid"; exit 1; }
node -e '
const base = process.argv[1];
const paths = ["", "dist/demo.js", "dist/demo-worker.js", "dist/stepq.browser.js", "dist/worker.js", "build/stepq-simd.wasm", "build/stepq-relaxed.wasm", "model/model_index.json"];
Promise.all(paths.map((p) => fetch(base + p).then((r) => [p, r.status, r.headers.get("cross-origin-embedder-policy")]))).then((rs) => {
  const bad = rs.filter(([, s, coep]) => s !== 200 || coep !== "require-corp");
  if (bad.length) { console.error("package: FAIL: stepq serve:", JSON.stringify(bad)); process.exit(1); }
});' "$url" || { kill "$serve_pid"; exit 1; }
kill "$serve_pid"
wait "$serve_pid" || true
echo "package: OK: the installed stepq serve serves the demo ($url)"

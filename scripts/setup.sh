#!/usr/bin/env bash
# From a fresh Debian machine to Lapse's main job: installs the system libraries, fetches the real sample media and real
# upscaler weights, builds in release, and runs graphs/anime-upscale-realesrgan.json (a real photograph through the real
# Real-ESRGAN anime 4x network — the same RRDB generator APISR releases), printing where the output went.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/install-deps.sh
./scripts/fetch-assets.sh
echo "building lapse (release)…"
swift build -c release --product lapse 2>&1 | grep -E "error|warning: unre|Compiling|Build complete" | tail -3
bin="$(swift build -c release --show-bin-path)/lapse"
mkdir -p out
echo "running the main job: $bin run graphs/anime-upscale-realesrgan.json"
"$bin" run graphs/anime-upscale-realesrgan.json
echo "done: the upscaled image is in $root/out/ ($(ls out | tr '\n' ' '))"

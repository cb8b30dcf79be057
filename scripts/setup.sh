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
log="$(mktemp)"
if ! swift build -c release --product lapse >"$log" 2>&1; then
    grep -E "error" "$log" | head -20 || tail -20 "$log"
    echo "setup: the release build failed (full log: $log)" >&2
    exit 1
fi
# A rebuild with nothing to compile prints no "Compiling" line, so an empty match is fine here.
grep -E "warning: unre|Compiling|complete" "$log" | tail -3 || true
rm -f "$log"
bin="$(swift build -c release --show-bin-path)/lapse"
mkdir -p out
echo "running the main job: $bin run graphs/anime-upscale-realesrgan.json"
"$bin" run graphs/anime-upscale-realesrgan.json
echo "done: the upscaled image is in $root/out/ ($(ls out | tr '\n' ' '))"

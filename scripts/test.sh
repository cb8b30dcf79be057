#!/usr/bin/env bash
# Runs Lapse's full test suite (release build: the numeric parity tests are 10-50x faster optimised).
# Tests that use real weights and media need scripts/fetch-assets.sh to have run (scripts/setup.sh does it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -f models/realesrgan/realesrgan-x4plus-anime.bin ] || ./scripts/fetch-assets.sh
exec swift test -c release "$@"

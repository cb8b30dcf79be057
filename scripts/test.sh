#!/usr/bin/env bash
# Runs Lapse's full test suite (release build: the numeric parity tests are 10-50x faster optimised).
# Tests that use real weights and media need scripts/fetch-assets.sh to have run (scripts/setup.sh does it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -f models/realesrgan/realesrgan-x4plus-anime.bin ] || ./scripts/fetch-assets.sh
# Build first, one thing at a time: the example plugin package (Examples/SharpenPlugin, which its suite builds and tests
# as an author would) compiles the core again in its own scratch folder, and doing that while the suite runs starves
# the server tests on a 2-core machine. Built here, the suite's own builds of it are no-ops.
# --disable-testable-imports: in release, `swift test` otherwise compiles every module with -enable-testing, unlike
# `swift build`, so each would recompile all of them (and scripts/setup.sh's build after it, again). No test needs
# @testable.
swift build -c release --build-tests
example=(-c release --package-path Examples/SharpenPlugin --scratch-path .build/examples/SharpenPlugin)
swift build "${example[@]}" --build-tests
swift build "${example[@]}" --product SharpenPlugin
exec swift test -c release --disable-testable-imports "$@"

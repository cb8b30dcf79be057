# Sourced by the benchmark scripts: the repository root as working directory, the Python with the references,
# release builds of the Lapse products a script times, and Benchmarks/pairs.py on Python's path.
#
#   PYTHON=…          the Python with torch/diffusers/spandrel/ncnn (default /work/venv/bin/python)
#   SCRATCH=…         the build folder for the benchmark executables (default .build-bench, apart from .build so a
#                     benchmark build never waits on, or invalidates, a test build)
#   PAIRS=…           interleaved (reference, Lapse) pairs per workload (default 5)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SCRATCH="${SCRATCH:-.build-bench}"
PAIRS="${PAIRS:-5}"
export PYTHONPATH="$PWD/Benchmarks${PYTHONPATH:+:$PYTHONPATH}"

# Builds the named products in release; sets BIN to their folder.
build_products() {
    local product log
    log="$(mktemp)"
    for product in "$@"; do
        # Quiet unless it fails: SwiftPM's warnings about dependencies' files would bury the figures.
        swift build -c release --scratch-path "$SCRATCH" --product "$product" > "$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
    done
    rm -f "$log"
    BIN="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)"
}

#!/usr/bin/env bash
# Quick start, first command: sets everything up, then runs sbsconv on the bundled sample.
# (Until the conversion engine lands this probes the sample and re-encodes it.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. scripts/env.sh
uv sync --locked
sample=$(uv run --no-sync python -c 'import sbsconv.samples as s; print(s.path())')
uv run --no-sync sbsconv probe "$sample"
uv run --no-sync sbsconv reencode "$sample" "${1:-sbsconv_sample.mp4}"

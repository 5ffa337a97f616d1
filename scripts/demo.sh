#!/usr/bin/env bash
# Quick start, first command: sets everything up, then converts the bundled sample clip into
# a side-by-side 3D video in the current folder with the default depth model
# (Depth-Anything-V2 Small, downloaded from Hugging Face on first use; offline with nothing
# cached, sbsconv says what to fetch or pass). Extra arguments go to `sbsconv convert`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. scripts/env.sh
uv sync --locked --extra ui
sample=$(uv run --no-sync python -c 'import sbsconv.samples as s; print(s.path())')
cd "$OLDPWD"
uv run --project "$(dirname "$0")/.." --no-sync sbsconv probe "$sample"
uv run --project "$(dirname "$0")/.." --no-sync sbsconv convert "$sample" sbsconv_sample.mp4 --headset-suffix "$@"

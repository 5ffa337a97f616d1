#!/usr/bin/env bash
# Quick start, second command: sets everything up, then runs every test: the GoogleTest
# suite (ctest) and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. scripts/env.sh
uv sync --locked --extra ui
build_dir=$(sbsconv_build_dir)
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  # The environment is current but the build folder is gone: rebuild it.
  uv sync --locked --extra ui --reinstall-package sbsconv
fi
uv run --no-sync cmake --build "$build_dir" --target sbsconv_cpp_tests
uv run --no-sync ctest --test-dir "$build_dir" --output-on-failure
uv run --no-sync pytest "$@"

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
# Note [Two test workers]: SBSCONV_TEST_WORKERS=N runs the test files on N processes, each file
# whole on one worker (its module fixtures, the web app's server and browser among them, are built
# once); the default, 0, runs them in this one. On 2 cores two workers took the suite from 17:37
# to 13:09, but in one of five runs the Ray tests' tasks failed beside the other worker's load
# (test_batch_ray.py; alone they pass), so CI keeps one process until that is understood.
uv run --no-sync pytest -n "${SBSCONV_TEST_WORKERS:-0}" --dist loadfile "$@"

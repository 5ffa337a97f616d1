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
# Note [Two test workers]: the test files run on SBSCONV_TEST_WORKERS processes (default 2; 0 runs
# them in this one), each file whole on one worker, so its module fixtures (the web app's server
# and browser among them) are built once. On 2 cores two workers took the suite from 17:37 to
# 13:09. A test must not depend on another file's tests, nor on having the machine to itself:
# beside the other worker's load, a Ray task's first progress report once came before the video's
# length was known and failed the task (fraction None; test_batch.py now tests it directly). If a
# Ray test fails again beside the other worker, its message names each file's error.
uv run --no-sync pytest -n "${SBSCONV_TEST_WORKERS:-2}" --dist loadfile "$@"

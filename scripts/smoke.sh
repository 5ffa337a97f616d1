#!/usr/bin/env bash
# The default path in under a minute, before anything else: the user journeys marked `smoke` in
# tests/python/test_user_journeys.py (a registry name with a local checkpoint, a bare convert()
# on a filled Hugging Face cache, the CLI's --checkpoint as the offline message advises, a
# default-option run killed and resumed), one line each. .ci/run runs it first, so a broken
# default path fails fast; run it yourself before you push. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. scripts/env.sh
uv sync --locked --extra ui
uv run --no-sync pytest tests/python/test_user_journeys.py -m smoke -v --no-header \
  -o console_output_style=classic "$@"

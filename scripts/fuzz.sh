#!/usr/bin/env bash
# Bounded libFuzzer run of every harness in tests/fuzz (see tests/fuzz/README.md):
#
#   scripts/fuzz.sh [seconds_per_harness]      (default 60: seven harnesses, about 7 minutes)
#
# Configures and builds the "fuzz" CMake preset (build/fuzz, clang), then runs the harnesses one
# after another, each for the given time, on a scratch copy of its committed corpus (the
# repository's corpus does not grow). A crash, sanitizer report, timeout or out-of-memory
# input is copied to tests/fuzz/regressions/<harness>/ (which the ordinary test suite replays)
# and makes the script exit non-zero after every harness has run. Prints executions and
# coverage per harness at the end. Nothing else in the repository is written; logs stay in
# build/fuzz/logs/.
#
# Environment: SBSCONV_FUZZ_HARNESSES="fuzz_media fuzz_journal" runs only those;
# SBSCONV_FUZZ_SEED=N fixes libFuzzer's random seed (CI does: see Note [Fuzzing in CI]).
#
# Note [Fuzzing in CI]
# CI fuzzes with a fixed seed, so that a commit's CI result does not depend on the luck of the
# draw: the same commit explores the same mutations (as far as its machine's speed takes it in
# the time given), and a red run means the change under test broke something the seeded
# exploration reaches. Exploring new ground is the job of long runs with fresh seeds (by hand:
# scripts/fuzz.sh 600), whose findings are committed as regressions with their fixes.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
seconds=${1:-60}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [seconds_per_harness]" >&2
  exit 2
fi
harnesses=(${SBSCONV_FUZZ_HARNESSES:-fuzz_media fuzz_state_file fuzz_journal fuzz_weights fuzz_isobmff fuzz_depth_file fuzz_hevc})

. scripts/env.sh
if ! command -v clang++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  # clang and its runtime libraries (libFuzzer, ASan): libclang-rt-dev on Debian 12; Ubuntu
  # ships them with clang itself.
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang >/dev/null || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libclang-rt-dev \
    >/dev/null 2>&1 || true
fi
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz.sh: clang++ (with libFuzzer) is needed: apt-get install clang libclang-rt-dev" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  # The preset builds against the uv environment's torch (cmake/Torch.cmake).
  uv sync --locked
fi

# ---- build (under the shared build lock) -----------------------------------------------------
lock=/tmp/sbsconv-build.lock
if [ ! -f build/fuzz/CMakeCache.txt ]; then
  flock "$lock" uv run --no-sync cmake --preset fuzz
fi
flock "$lock" uv run --no-sync cmake --build --preset fuzz

# ---- run --------------------------------------------------------------------------------------
scratch=$(mktemp -d "${TMPDIR:-/tmp}/sbsconv-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
logs=build/fuzz/logs
mkdir -p "$logs"

# Third-party code (LibTorch, FFmpeg) is not instrumented: see tests/sanitizers/README.md.
export ASAN_OPTIONS="detect_odr_violation=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1

failed=0
rows=()
for h in "${harnesses[@]}"; do
  corpus="$scratch/corpus/$h"
  artifacts="$scratch/artifacts/$h"
  mkdir -p "$corpus" "$artifacts" "$scratch/tmp/$h"
  cp -r "tests/fuzz/corpus/$h/." "$corpus/" 2>/dev/null || true
  cp -r "tests/fuzz/regressions/$h/." "$corpus/" 2>/dev/null || true
  find "$corpus" -name '.*' -type f -delete
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  [ -n "${SBSCONV_FUZZ_SEED:-}" ] && args+=(-seed="$SBSCONV_FUZZ_SEED")
  [ -f "tests/fuzz/$h.dict" ] && args+=(-dict="tests/fuzz/$h.dict")
  [ "$h" = fuzz_media ] && args+=(-dict=tests/fuzz/media.dict)
  log="$logs/$h.log"
  echo "fuzz.sh: $h for ${seconds}s (log: $log)"
  set +e
  # The outer timeout only guards against a run that ignores -max_total_time (a hang while
  # loading the corpus, say); libFuzzer's own -timeout reports slow inputs.
  SBSCONV_FUZZ_SCRATCH="$scratch/tmp/$h" timeout --kill-after=30 $((seconds + 300)) \
    nice -n 10 "build/fuzz/$h" "${args[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  rm -rf "$scratch/tmp/$h"

  # libFuzzer's final statistics (-print_final_stats) and its last status line.
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  status=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$status")

  found=()
  for f in "$artifacts"/*; do
    [ -f "$f" ] || continue
    mkdir -p "tests/fuzz/regressions/$h"
    cp "$f" "tests/fuzz/regressions/$h/"
    found+=("$(basename "$f")")
  done
  if [ ${#found[@]} -gt 0 ] || [ "$rc" -ne 0 ]; then
    failed=1
    result="FAIL rc=$rc ${found[*]:-}"
    echo "fuzz.sh: $h failed (exit $rc); reproducers copied to tests/fuzz/regressions/$h/: ${found[*]:-none}"
    echo "---- $log (last 60 lines) ----"
    tail -60 "$log"
    echo "----"
  else
    result=ok
  fi
  rows+=("$(printf '%-16s %6s %10s %8s %6s %7s %11s  %s' "$h" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

echo
printf '%-16s %6s %10s %8s %6s %7s %11s  %s\n' harness seconds execs exec/s cov ft corpus result
for row in "${rows[@]}"; do
  echo "$row"
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz.sh: findings above; reproduce one with build/fuzz/<harness> <file>, or run the" \
    "replay test: ctest -R fuzz_replay" >&2
fi
exit "$failed"

#!/usr/bin/env bash
# The GPU checks of issue 16 in one go, for a machine with an NVIDIA GPU and sbsconv installed
# (`./scripts/test.sh` once, or the extension built against that machine's torch): the CUDA,
# NVDEC and NVENC tests, then benchmarks/bench_gpu.py at 1080p (the default sbsconv settings,
# then half-sbs with x264's fastest preset, which shows the pipeline beside a CPU encoder), with
# a PyTorch profiler trace, and at 2160p (the default settings). Figures go to benchmarks/RESULTS.md ("The GPU path").
#
#   benchmarks/gpu_check.sh [OUT_DIR]     (default: gpu-check/)
# SBSCONV_PYTHON picks the interpreter (default: uv run --no-sync python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
mkdir -p "$out"
if [ -n "${SBSCONV_PYTHON:-}" ]; then py=($SBSCONV_PYTHON)
elif command -v uv >/dev/null && [ -d .venv ]; then py=(uv run --no-sync python)
else py=(python3); fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"${py[@]}" -c "import sbsconv.cli as c; raise SystemExit(c.main(['doctor']))" 2>&1 | tee "$out/doctor.txt"
T=tests/python
"${py[@]}" -m pytest -q -rs -p no:cacheprovider \
  "$T/test_decode.py::test_cuda_device_frames_match_cpu_frames" \
  "$T/test_decode.py::test_cuda_hdr_frames_are_tone_mapped_as_on_the_cpu" \
  "$T/test_stereo.py::test_cuda_matches_the_cpu_kernel" \
  "$T/test_depth_anything_v2.py::test_cuda_infer_agrees_with_cpu" \
  "$T/test_depth_pro.py::test_cuda_fp16_agrees_with_cpu" \
  "$T/test_video_depth_anything.py::test_cuda_windowed_agrees_with_cpu" \
  "$T/test_depth_anything_3.py::test_cuda_windows_agree_with_the_cpu" \
  "$T/test_encode.py::test_nvenc_takes_cuda_frames" \
  "$T/test_host_sync.py" 2>&1 | tee "$out/tests.txt" | tail -40
"${py[@]}" benchmarks/bench_gpu.py --device cuda --random-weights --height 1080 --seconds 13 \
  --json "$out/gpu.json" --profile "$out/trace.json" 2>&1 | tee "$out/bench.txt" | tail -8
"${py[@]}" benchmarks/bench_gpu.py --device cuda --random-weights --height 1080 --seconds 13 \
  --preset ultrafast --layout half-sbs --json "$out/gpu_fast.json" 2>&1 | tee "$out/bench_fast.txt" | tail -8
# 4K (issue 31: every layout keeps pace at 1080p and 2160p): the default settings, 4 s
"${py[@]}" benchmarks/bench_gpu.py --device cuda --random-weights --height 2160 --seconds 4 \
  --json "$out/gpu_4k.json" 2>&1 | tee "$out/bench_4k.txt" | tail -8
# Note [Chunk-parallel encoding]: the parallel segment encoders' speed-up on this machine's
# cores (issue 31: one libx264 instance keeps only about six of them busy at 1080p)
"${py[@]}" benchmarks/bench_parallel_encoding.py --sizes 3840x1080 --frames 192 --segment 48 \
  --json "$out/parallel_encoding.json" 2>&1 | tee "$out/parallel_encoding.txt" | tail -12

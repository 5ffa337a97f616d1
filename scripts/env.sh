# Sourced by the scripts: puts uv on PATH and names the CMake build folder that
# scikit-build-core uses (pyproject.toml: build-dir = "build/{cache_tag}").
export PATH="$HOME/.local/bin:$PATH"
sbsconv_build_dir() {
  echo "build/$(uv run --no-sync python -c 'import sys; print(sys.implementation.cache_tag)')"
}

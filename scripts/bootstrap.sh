#!/usr/bin/env bash
# Installs what sbsconv needs to build and test on a Debian/Ubuntu machine, and uv.
# Idempotent: installs only what is missing. Uses sudo when not run as root.
set -euo pipefail

log() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else log "need root (or sudo) to run: $*"; return 1; fi
}

# ---- system packages ------------------------------------------------------------------------
# g++ and make, pkg-config, FFmpeg's libraries with headers and its command line (tests and
# benchmarks compare against it), GoogleTest, ccache, and Python's headers and venv module.
packages=(build-essential pkg-config ccache ffmpeg
          libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
          libgtest-dev python3-venv python3-dev)
# A headless browser and its WebDriver for the web app's tests (no browser download): Debian's
# packages. Where they cannot be had (Ubuntu ships chromium as a snap) the browser tests skip
# and say why; nothing else needs them.
browser_packages=(chromium chromium-driver fonts-liberation)

if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! command -v chromedriver >/dev/null 2>&1; then
    log "installing ${browser_packages[*]} (the web app's browser tests)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${browser_packages[@]}" >/dev/null 2>&1 \
      || log "could not install ${browser_packages[*]}: the web app's browser tests will skip"
  fi
elif [ "$(uname)" = "Darwin" ] && command -v brew >/dev/null 2>&1; then
  for p in ffmpeg pkg-config googletest ccache; do
    brew list --versions "$p" >/dev/null 2>&1 || brew install "$p"
  done
else
  log "not a Debian/Ubuntu (apt) or Homebrew system: install FFmpeg's development libraries,"
  log "pkg-config, a C++20 compiler and GoogleTest yourself, then run this again."
fi

# ---- uv -----------------------------------------------------------------------------------
# From PyPI, into a private virtual environment (Debian's system pip refuses user installs).
if ! command -v uv >/dev/null 2>&1; then
  tools="${XDG_DATA_HOME:-$HOME/.local/share}/sbsconv/uv-venv"
  if [ ! -x "$tools/bin/uv" ]; then
    log "installing uv into $tools"
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --upgrade pip uv
  fi
  mkdir -p "$HOME/.local/bin"
  ln -sf "$tools/bin/uv" "$HOME/.local/bin/uv"
  log "uv installed as $HOME/.local/bin/uv"
fi

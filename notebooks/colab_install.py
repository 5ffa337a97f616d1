"""Installs sbsconv in a fresh Colab runtime, building its wheel only once.

Each Colab runtime starts empty, and compiling sbsconv's C++ core takes minutes on Colab's two
vCPUs. So the first session builds a wheel and keeps it in a cache folder (the user's Google
Drive), keyed by what the wheel's binary depends on: the Python version, the torch version and
CUDA variant it was compiled against, and the sbsconv commit (or the hash of the source archive
it came from). Later sessions with the same key install that wheel: no compiler, no FFmpeg
development packages, under a minute to `import sbsconv` beyond torch's own download.

A wheel already in Drive (`package=...whl`) is installed as it is; a source archive
(`.tar.gz`/`.zip`) is built once and cached like a checkout. A wheel is written to the cache
under a temporary name and renamed when complete, so an interrupted copy is never taken for a
wheel.

Used by the notebook's install cell (`python notebooks/colab_install.py --source CHECKOUT
--cache /content/drive/MyDrive/sbsconv/wheels`); the functions take their side effects
(building, pip) as arguments so that tests/python/test_colab_install.py runs them with a local
folder standing in for Drive.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

# What FFmpeg's development packages a build needs (Debian/Ubuntu names, as on Colab).
BUILD_PACKAGES = ["pkg-config", "ccache", "libavcodec-dev", "libavformat-dev", "libavfilter-dev",
                  "libavdevice-dev", "libavutil-dev", "libswscale-dev", "libswresample-dev"]
# Libraries the wheel links at run time (present on Colab, listed for other hosts).
RUNTIME_PACKAGES = ["libavcodec-dev", "libavformat-dev", "libswscale-dev", "libswresample-dev"]
ARCHIVES = (".tar.gz", ".tgz", ".zip")


def cache_key(python: str, torch_version: str, cuda: str | None, source_id: str, system: str = "") -> str:
    """The cache folder's name for one build: ``cp312-torch2.14.1-cu130-ubuntu22.04-<source
    id>`` (the system's release too: the wheel links its FFmpeg libraries)."""
    variant = "cu" + cuda.replace(".", "") if cuda else "cpu"
    torch_version = torch_version.split("+")[0]
    parts = [python, f"torch{torch_version}", variant, *([system] if system else []), source_id]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))[:120]


def system_id() -> str:
    """The OS release (``ubuntu22.04``) from /etc/os-release; empty elsewhere."""
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return ""
    return (fields.get("ID", "").strip('"') + fields.get("VERSION_ID", "").strip('"')).lower()


def import_check() -> bool:
    """Whether ``import sbsconv`` works in a fresh interpreter (its extension loads)."""
    return subprocess.run([sys.executable, "-c", "import sbsconv"], capture_output=True).returncode == 0


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def installed_torch() -> tuple[str, str | None]:
    """The installed torch's version and CUDA variant, asked in a fresh interpreter (this one
    may have imported an older torch before the pinned one was installed)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__); print(torch.version.cuda)"],
                         check=True, capture_output=True, text=True).stdout.split()
    return out[0], None if out[1] == "None" else out[1]


def pinned_torch(source: Path) -> str | None:
    """The ``torch==X`` requirement of a checkout's pyproject.toml (the ABI the core is built for)."""
    text = ""
    if source.is_dir():
        pyproject = source / "pyproject.toml"
        text = pyproject.read_text() if pyproject.is_file() else ""
    elif source.name.endswith(".zip"):
        with zipfile.ZipFile(source) as z:
            names = sorted((n for n in z.namelist() if n.endswith("pyproject.toml")), key=len)
            text = z.read(names[0]).decode() if names else ""
    elif source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as t:
            members = sorted((m for m in t.getmembers() if m.name.endswith("pyproject.toml")), key=lambda m: len(m.name))
            f = t.extractfile(members[0]) if members else None
            text = f.read().decode() if f else ""
    found = re.search(r'"torch==([^"]+)"', text)
    return found.group(1) if found else None


def source_id(source: Path) -> str:
    """A checkout's commit (``git rev-parse HEAD``; a ``-dirty`` suffix with local changes), or
    the first 16 hex digits of an archive's SHA-256."""
    if source.is_file():
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return "sha256-" + digest.hexdigest()[:16]
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        raise ValueError(f"{source} is neither a git checkout nor a source archive: its build cannot be keyed")
    commit = head.stdout.strip()[:12]
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def find_cached(cache: Path, key: str) -> Path | None:
    """The complete wheel cached under ``key``, if there is exactly one."""
    folder = cache / key
    wheels = sorted(folder.glob("sbsconv-*.whl")) if folder.is_dir() else []
    return wheels[0] if len(wheels) == 1 else None


def store(cache: Path, key: str, wheel: Path) -> Path:
    """Copies ``wheel`` into the cache under ``key``: a temporary name first, renamed once the
    copy is complete (Drive may be cut off mid-copy)."""
    folder = cache / key
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / wheel.name
    partial = folder / ("." + wheel.name + ".part")
    shutil.copyfile(wheel, partial)
    os.replace(partial, final)
    for other in folder.glob("sbsconv-*.whl"):  # an older build under the same key
        if other != final:
            other.unlink()
    return final


def pip_install(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Builds sbsconv's wheel from a checkout or source archive against the installed torch
    (no build isolation: the extension must match the torch that will import it)."""
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *BUILD_PACKAGES], check=True)
    pip_install("scikit-build-core>=0.11", "cmake>=3.22", "ninja", "pybind11")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out_dir), str(source)], check=True)
    wheels = sorted(out_dir.glob("sbsconv-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"the build left {len(wheels)} sbsconv wheels in {out_dir}")
    return wheels[0]


def install(source: Path | None, cache: Path | None, *, package: Path | None = None,
            build: Callable[[Path, Path], Path] = build_wheel,
            pip: Callable[..., None] = pip_install,
            torch_info: Callable[[], tuple[str, str | None]] = installed_torch,
            works: Callable[[], bool] = import_check,
            system: str | None = None,
            extras: tuple[str, ...] = ("yt-dlp", "gdown", "ipywidgets")) -> dict:
    """Installs sbsconv from ``package`` (a wheel, installed as it is, or a source archive) or
    the checkout ``source``, through the wheel cache ``cache`` (None: no cache). A cached wheel
    that installs but does not import (the system's libraries changed under the same key) is
    built again and replaced. Returns what happened: ``how`` ("package", "cache" or "built"),
    the wheel, its cache key, the seconds."""
    t0 = time.perf_counter()
    origin = package if package is not None else source
    if origin is None or not Path(origin).exists():
        raise FileNotFoundError(f"nothing to install from: {origin}")
    origin = Path(origin)
    if origin.suffix == ".whl":  # its metadata pins the torch it was built against
        pip("--force-reinstall", str(origin), *extras)
        return {"how": "package", "wheel": str(origin), "key": None, "seconds": time.perf_counter() - t0}
    if origin.is_file() and not origin.name.endswith(ARCHIVES):
        raise ValueError(f"{origin} is not a wheel (.whl) or a source archive ({', '.join(ARCHIVES)})")
    torch_pin = pinned_torch(origin)
    pip(f"torch=={torch_pin}" if torch_pin else "torch", *extras)
    version, cuda = torch_info()
    key = cache_key(python_tag(), version, cuda, source_id(origin), system_id() if system is None else system)
    cached = find_cached(cache, key) if cache is not None else None
    if cached is not None:
        pip("--no-deps", "--force-reinstall", str(cached))
        if works():
            return {"how": "cache", "wheel": str(cached), "key": key, "seconds": time.perf_counter() - t0}
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build(origin, Path(tmp))
        target = store(cache, key, wheel) if cache is not None else wheel
        pip("--no-deps", "--force-reinstall", str(target))
        return {"how": "built", "wheel": str(target) if cache is not None else wheel.name, "key": key,
                "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="a checkout of sbsconv")
    parser.add_argument("--package", type=Path, help="a wheel or source archive to install instead")
    parser.add_argument("--cache", type=Path, help="the wheel cache folder (e.g. in Google Drive)")
    args = parser.parse_args(argv)
    report = install(args.source, args.cache, package=args.package)
    if report["how"] == "package":
        print(f"installed {report['wheel']} ({report['seconds']:.0f} s)")
    else:
        where = report["wheel"] if args.cache else "not cached"
        print(f"sbsconv {report['how']} for {report['key']}: {where} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

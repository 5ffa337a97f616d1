"""The Colab install cell's wheel cache (notebooks/colab_install.py), with a local folder
standing in for Google Drive; building and pip are recorded instead of run."""
from __future__ import annotations

import importlib.util
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("colab_install", ROOT / "notebooks" / "colab_install.py")
colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab)


@pytest.fixture
def checkout(tmp_path):
    """A git checkout with sbsconv's pyproject pin."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text('[project]\nname = "sbsconv"\ndependencies = ["torch==2.14.1"]\n')
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(src), *args], check=True)
    return src


class Recorder:
    def __init__(self):
        self.builds = 0
        self.installed: list[tuple[str, ...]] = []
        self.importable = True

    def build(self, source: Path, out: Path) -> Path:
        self.builds += 1
        wheel = out / "sbsconv-0.1.0-cp312-cp312-linux_x86_64.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("sbsconv/__init__.py", f"# build {self.builds} of {source.name}\n")
        return wheel

    def pip(self, *args: str) -> None:
        self.installed.append(args)

    def run(self, source, cache, torch=("2.14.1+cu130", "13.0"), system="ubuntu22.04", **kw):
        return colab.install(source, cache, build=self.build, pip=self.pip, torch_info=lambda: torch,
                             works=lambda: self.importable, system=system, **kw)


def test_the_first_session_builds_and_later_ones_install_the_cached_wheel(checkout, tmp_path):
    drive = tmp_path / "drive" / "wheels"
    r = Recorder()
    first = r.run(checkout, drive)
    assert first["how"] == "built" and r.builds == 1
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    assert first["key"] == f"{colab.python_tag()}-torch2.14.1-cu130-ubuntu22.04-{commit[:12]}"
    cached = Path(first["wheel"])
    assert cached.parent == drive / first["key"] and cached.is_file()
    assert not list(cached.parent.glob(".*.part"))  # written under a temporary name, then renamed
    assert ("torch==2.14.1", "yt-dlp", "gdown", "ipywidgets") in r.installed  # the pinned torch first
    # a new runtime: the same key, no build, the same wheel installed
    again = r.run(checkout, drive)
    assert again["how"] == "cache" and r.builds == 1 and again["wheel"] == first["wheel"]
    assert r.installed[-1] == ("--no-deps", "--force-reinstall", first["wheel"])


def test_anything_the_binary_depends_on_changes_the_key(checkout, tmp_path):
    drive = tmp_path / "drive"
    r = Recorder()
    keys = {r.run(checkout, drive)["key"],
            r.run(checkout, drive, torch=("2.15.0+cu130", "13.0"))["key"],
            r.run(checkout, drive, torch=("2.14.1+cu126", "12.6"))["key"],
            r.run(checkout, drive, torch=("2.14.1+cpu", None))["key"],
            r.run(checkout, drive, system="ubuntu24.04")["key"]}
    (checkout / "pyproject.toml").write_text('[project]\nname = "sbsconv"\ndependencies = ["torch==2.14.1"]\n# new\n')
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "y"],
                   check=True)
    keys.add(r.run(checkout, drive)["key"])
    assert len(keys) == 6 and r.builds == 6
    assert any("-cpu-" in k for k in keys)


def test_a_partial_copy_or_a_wheel_that_no_longer_imports_is_rebuilt(checkout, tmp_path):
    drive = tmp_path / "drive"
    r = Recorder()
    key = r.run(checkout, drive)["key"]
    wheel = next((drive / key).glob("*.whl"))
    # Drive cut off mid-copy last time: only the temporary file is there
    partial = wheel.with_name("." + wheel.name + ".part")
    wheel.rename(partial)
    assert r.run(checkout, drive)["how"] == "built" and r.builds == 2
    # the runtime's libraries changed under the same key: the cached wheel installs but does not import
    r.importable = False
    assert r.run(checkout, drive)["how"] == "built" and r.builds == 3
    assert len(list((drive / key).glob("*.whl"))) == 1


def test_a_wheel_or_source_archive_in_drive_is_accepted(checkout, tmp_path):
    r = Recorder()
    wheel = r.build(checkout, tmp_path)
    done = r.run(None, tmp_path / "drive", package=wheel)
    assert done["how"] == "package" and r.installed[-1] == ("--force-reinstall", str(wheel), "yt-dlp", "gdown",
                                                           "ipywidgets")
    archive = tmp_path / "sbsconv-0.1.0.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(checkout), "."], check=True)
    first = r.run(None, tmp_path / "drive", package=archive)
    assert first["how"] == "built" and "-sha256-" in first["key"]
    assert ("torch==2.14.1", "yt-dlp", "gdown", "ipywidgets") in r.installed  # the archive's pin
    assert r.run(None, tmp_path / "drive", package=archive)["how"] == "cache"
    with pytest.raises(ValueError, match="not a wheel"):
        r.run(None, tmp_path / "drive", package=checkout / "pyproject.toml")
    with pytest.raises(FileNotFoundError):
        r.run(tmp_path / "missing", tmp_path / "drive")


def test_without_a_cache_the_wheel_is_built_and_installed(checkout):
    r = Recorder()
    done = r.run(checkout, None)
    assert done["how"] == "built" and r.builds == 1 and r.installed[-1][:2] == ("--no-deps", "--force-reinstall")

"""User journeys: what users do, the way they reach it (the lesson of the default-path crash).

Models are reached by registry name through a Hugging Face cache laid out as `hf download`
leaves it (conftest's `hub_cache`: random weights in every model's published file layout),
offline; every option is left at its default unless the journey is about that option; the
commands that the README, the notebook and sbsconv's own error messages tell a user to run are
run as written, with the sample clip for `clip.mp4`. Rule (docs/CONTRIBUTING.md): every option
whose default is `auto` or family-dependent has at least one end-to-end test here that leaves
it alone. The journeys marked `smoke` are what scripts/smoke.sh runs first in CI.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import hubcache
import pytest
import sbsconv
from helpers import ffprobe, run_python
from sbsconv import models
from sbsconv.errors import ModelError, SbsconvWarning

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = sbsconv.ConvertOptions().model


def frame_times(path: Path) -> list[float]:
    """The presentation times of a video's frames, from ffprobe."""
    out = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")
    return sorted(float(p["pts_time"]) for p in out["packets"])


def decode_errors(path: Path) -> str:
    """What FFmpeg says when it decodes every frame of `path` (nothing for a clean file)."""
    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True, timeout=300)
    return proc.stderr.strip()


# ---- the default path -----------------------------------------------------------------------


@pytest.mark.smoke
def test_bare_convert_with_the_default_model_from_the_cache(offline_hub, sample_clip, tmp_path):
    # sbsconv.convert(IN, OUT), nothing else: the default model by registry name from the hub
    # cache, auto device, precision, batch, input size, codec and preset.
    result = sbsconv.convert(sample_clip, tmp_path / "clip_3d.mp4", progress=False)
    assert result.model == DEFAULT_MODEL
    assert result.frames == sbsconv.probe(sample_clip).num_frames
    from sbsconv.models.precision import auto_cpu_precision

    # what auto picks for Depth-Anything-V2 on this CPU: bf16 with AMX-BF16, int8 with VNNI, fp32
    assert result.precision == auto_cpu_precision(bf16_on_amx=True)[0] and result.batch_size >= 1
    assert result.encoder == "libx264" and result.encoder_preset  # chosen, and said
    info = sbsconv.probe(result.output)
    assert (info.width, info.height) == (2 * 1280, 720)
    assert decode_errors(Path(result.output)) == ""


@pytest.mark.smoke
def test_a_registry_name_with_a_local_checkpoint(sample_clip_short, tmp_path, monkeypatch):
    # nothing cached, offline: checkpoint= stands for the download, the registry name for the
    # family and its settings
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = hubcache.published_files(DEFAULT_MODEL)
    spec = models.spec(DEFAULT_MODEL)
    checkpoint = tmp_path / spec.filename
    checkpoint.write_bytes(files[spec.filename])
    result = sbsconv.convert(sample_clip_short, tmp_path / "out.mp4", model=DEFAULT_MODEL, checkpoint=checkpoint,
                             progress=False)
    assert result.model == DEFAULT_MODEL and result.frames == 6


@pytest.mark.smoke
def test_the_offline_message_is_followed_literally(sample_clip_short, tmp_path, monkeypatch):
    # Offline with nothing cached, sbsconv names what to fetch or pass; doing exactly what it says
    # (the --checkpoint FILE of the message, on the command line) converts.
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    hubcache.use_hub_cache(monkeypatch, empty)
    with pytest.raises(ModelError) as caught:
        sbsconv.convert(sample_clip_short, tmp_path / "never.mp4", progress=False)
    message = str(caught.value)
    download = re.search(r"`hf download (\S+) (\S+)`", message)
    assert download, message
    assert "checkpoint=PATH" in message or "--checkpoint" in message
    repo, filename = download.groups()
    assert (repo, filename) == (models.spec(DEFAULT_MODEL).repo_id, models.spec(DEFAULT_MODEL).filename)
    # what `hf download` would fetch: the published file, here with random weights
    (tmp_path / filename).write_bytes(hubcache.published_files(DEFAULT_MODEL)[filename])
    env = {**os.environ, **hubcache.hub_env(empty)}
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(sample_clip_short), "out.mp4",
                           "--checkpoint", filename, "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert sbsconv.probe(tmp_path / "out.mp4").num_frames == 6
    assert not (tmp_path / "never.mp4").exists()


def test_the_default_model_through_the_other_entry_points(offline_hub, sample_clip_short, tmp_path):
    # export_depth, convert_many (a folder) and the command line, each with the default model by
    # registry name from the cache and every option left alone
    exported = sbsconv.export_depth(sample_clip_short, tmp_path / "clip_depth.mkv", progress=False)
    assert exported.model == DEFAULT_MODEL and exported.frames == 6 and exported.relative
    batches = list(sbsconv.read_depth(exported.path))
    assert all(b.relative for b in batches) and sum(len(b.times) for b in batches) == 6
    folder = tmp_path / "season"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):  # two files (links to one would be one input)
        shutil.copyfile(sample_clip_short, folder / name)
    summary = sbsconv.convert_many(folder, tmp_path / "season_3d", progress=False)
    assert [o.status for o in summary.files] == ["done", "done"], str(summary)
    env = {**os.environ, **hubcache.hub_env(offline_hub)}
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", str(sample_clip_short), "cli.mp4",
                           "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sbsconv.probe(tmp_path / "cli.mp4").num_frames == 6


@pytest.mark.parametrize("depth_format", ["gray16", "png16"])
def test_previews_render_from_a_depth_file_without_a_model(depth_format, tiny_model, sample_clip_short, tmp_path,
                                                           monkeypatch):
    # preview(..., depth=FILE), and the web app's preview, render from the exported depth (no
    # model is loaded: the model named here does not exist, and the web app's default one is
    # not cached, offline), png16/exr folders included
    from sbsconv import ui

    empty = tmp_path / "empty_cache"
    empty.mkdir()
    hubcache.use_hub_cache(monkeypatch, empty)
    target = tmp_path / ("depth.mkv" if depth_format == "gray16" else "depth_frames")
    exported = sbsconv.export_depth(sample_clip_short, target, model=str(tiny_model), input_size=70,
                                    format=depth_format, progress=False)
    shown = sbsconv.preview(sample_clip_short, at=0.2, depth=exported.path, model="no-such-model")
    assert shown.rows[0][1].title.startswith("depth (depth file")
    from_model = sbsconv.preview(sample_clip_short, at=0.2, model=str(tiny_model), input_size=70)
    assert shown.rows[0][1].image.shape == from_model.rows[0][1].image.shape
    app = ui.App(ui.Inputs(tmp_path / "work", [tmp_path, sample_clip_short.parent]))
    values = {f.name: ui.component_spec(f)["value"] for f in sbsconv.ConvertOptions.fields()}
    values.update(depth=exported.path)
    frame, depth, packed, anaglyph, status = app.preview([], str(sample_clip_short), "", "0.2",
                                                          *[values[n] for n in app.names])
    assert depth is not None and "sbs-error" not in status, status


def _registry_cases() -> list:
    defaults = set(models.approaches())
    return [pytest.param(name, id=name + (" (family defaults)" if name in defaults else ""))
            for name in models.depth_models()]


@pytest.mark.parametrize("name", _registry_cases())
def test_every_registry_name_converts(name, hub_cache_all, testsrc, tmp_path, monkeypatch):
    # Each family's default approach with every option left alone (its own input size, window,
    # precision); the other names at a small input size, which the family default already covers.
    hubcache.use_hub_cache(monkeypatch, hub_cache_all)
    clip = testsrc("journey_registry.mp4", size="128x96", rate=10, seconds=0.6)
    extra = {} if name in models.approaches() else {"input_size": 56}
    result = sbsconv.convert(clip, tmp_path / "out.mp4", model=name, progress=False, **extra)
    assert result.model == name and result.frames == 6
    assert sbsconv.probe(result.output).num_frames == 6


@pytest.mark.parametrize("name", sorted(set(models.available()) - set(models.depth_models())))
def test_every_mask_model_exports_masks_by_name(name, hub_cache_all, testsrc, tmp_path, monkeypatch):
    # the mask models by registry name, every option left alone; as model= they are refused
    hubcache.use_hub_cache(monkeypatch, hub_cache_all)
    clip = testsrc("journey_registry.mp4", size="128x96", rate=10, seconds=0.6)
    result = sbsconv.export_mask(clip, tmp_path / "mask.mkv", model=name)
    assert result.model == name and result.frames == 6
    assert sbsconv.read_masks(result.path, clip).shape == (6, 1, 96, 128)
    with pytest.raises(sbsconv.errors.OptionError, match="subject masks, not depth"):
        sbsconv.convert(clip, tmp_path / "out.mp4", model=name, progress=False)
    assert not (tmp_path / "out.mp4").exists()


# ---- resume, every option at its default ------------------------------------------------------

KILLED = textwrap.dedent(
    """
    import os, sys, sbsconv
    os.environ["SBSCONV_TEST_FAULT"] = sys.argv[3]
    model = {} if sys.argv[4] == "default" else {"model": sys.argv[4]}
    sbsconv.convert(sys.argv[1], sys.argv[2], segment_seconds=0.5, progress=False, **model)
    """
)


@pytest.mark.parametrize("which", ["default", pytest.param("tiny", marks=pytest.mark.smoke)])
def test_a_killed_default_run_resumes_whatever_the_paths_spelling(which, hub_cache, tiny_model, testsrc, tmp_path,
                                                                 monkeypatch):
    # SIGKILL after the first journaled segment, then the same call again with every option at
    # its default (the automatic preset, precision, codec, batch size and input size), spelled
    # with absolute paths where the first used relative ones. segment_seconds is the one option
    # given: the clip is 1.2 s, the default segment 10 s. The result has every source frame
    # once, at the source's times.
    clip = testsrc("journey_resume.mp4", size="320x180", rate=15, seconds=1.2)
    model = "default" if which == "default" else str(tiny_model)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    os.symlink(clip, work / "clip.mp4")
    proc = run_python(KILLED, "clip.mp4", "out.mp4", "encode:5:kill", model, timeout=600,
                      env=hubcache.hub_env(hub_cache))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    journal = (work / ".out.mp4.sbsconv-resume" / "journal.txt").read_text()
    assert "\nsegment 0 " in journal and "choice encoder_preset" in journal

    hubcache.use_hub_cache(monkeypatch, hub_cache)
    kwargs = {} if which == "default" else {"model": str(tiny_model)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SbsconvWarning)  # "converting them again" would fail here
        resumed = sbsconv.convert(os.path.realpath(clip), work / "out.mp4", segment_seconds=0.5, progress=False,
                                  **kwargs)
    assert resumed.resumed_from > 0
    assert resumed.frames == 18
    assert frame_times(work / "out.mp4") == pytest.approx(frame_times(clip), abs=1e-3)
    assert decode_errors(work / "out.mp4") == ""


# ---- split films, headsets ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["full-sbs", "apple-3d"])
def test_a_split_film_decodes_cleanly_with_the_single_runs_metadata(layout, tiny_model, testsrc, tmp_path,
                                                                     monkeypatch):
    # the CPU, no preset: one preset chosen for every part before they start (each part left
    # to itself measures the model on its own and may choose another); the joined file decodes
    # without an error line and carries the stereo boxes a single run writes
    from sbsconv import conversion

    clip = testsrc("journey_split.mp4", size="320x180", rate=15, seconds=4.0,
                   extra=("-g", "15", "-keyint_min", "15"))
    kwargs = {"model": str(tiny_model), "layout": layout}
    given = []
    part = conversion.convert_part

    def recording(source, part_path, options, **window):
        given.append(options.preset)
        return part(source, part_path, options, **window)

    monkeypatch.setattr(conversion, "convert_part", recording)
    split = sbsconv.convert_split(clip, tmp_path / "split.mp4", split=2, warm_up=0.5, **kwargs)
    assert len(given) == 2 and len(set(given)) == 1
    # the preset the engine would choose, settled: libx264's (full-sbs), libx265's (apple-3d)
    assert given[0] in ("medium", "fast", "faster", "veryfast")
    single = sbsconv.convert(clip, tmp_path / "single.mp4", progress=False, **kwargs)
    assert split.frames == single.frames == 60
    assert decode_errors(Path(split.output)) == ""
    stereo_split = sbsconv.probe(split.output).stereo
    stereo_single = sbsconv.probe(single.output).stereo
    assert stereo_split == stereo_single
    assert stereo_split["layout"] == "side-by-side" and stereo_split["apple"]["packing"] == "side"


def test_vr180_from_hd_is_hevc_that_headsets_decode(tiny_model, tmp_path):
    # A VR180 pair from a 720p source is 5760x2880: beyond H.264 level 5.2, so codec="auto"
    # (left alone) encodes HEVC and says why.
    clip = Path(__file__).resolve().parents[3] / "shared" / "data" / "bt709_full_range.mp4"
    with pytest.warns(SbsconvWarning, match="H.264 level 5.2"):
        result = sbsconv.convert(clip, tmp_path / "vr.mp4", model=str(tiny_model), layout="vr180", duration=0.1,
                                 preset="ultrafast", input_size=70, progress=False)
    stream = ffprobe(result.output, "-select_streams", "v:0", "-show_entries", "stream=codec_name,codec_tag_string,"
                     "width,height")["streams"][0]
    assert (stream["width"], stream["height"]) == (5760, 2880)
    assert stream["codec_name"] == "hevc" and stream["codec_tag_string"] == "hvc1"


# ---- the notebook, the web app, the README --------------------------------------------------


@pytest.mark.parametrize("mode", ["preview", "full"])
def test_the_notebook_runs_headless_with_its_default_model(mode, hub_cache, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = ROOT / "notebooks" / "sbsconv_colab.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if "colab" not in c.metadata.get("tags", [])]
    out = tmp_path / "out"
    env = {"SBSCONV_NOTEBOOK_LOCAL": "1", "SBSCONV_NOTEBOOK_MODE": mode, "SBSCONV_NOTEBOOK_OUT": str(out),
           **hubcache.hub_env(hub_cache)}
    saved = {k: os.environ.get(k) for k in [*env, "SBSCONV_NOTEBOOK_MODEL"]}
    os.environ.pop("SBSCONV_NOTEBOOK_MODEL", None)
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert (out / "preview.png").stat().st_size > 1000
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, "the preview cell displays an image"
    outputs = list(out.glob("*_3d.mp4"))
    if mode == "full":
        from sbsconv import samples

        assert len(outputs) == 1
        info, source = sbsconv.probe(outputs[0]), sbsconv.probe(samples.path())
        assert (info.width, info.height) == (2 * source.width, source.height)
        assert info.num_frames == round(float(source.fps))  # one second in local mode
    else:
        assert outputs == []


def test_the_web_app_converts_with_its_default_model(offline_hub, sample_clip, tmp_path):
    from sbsconv import ui

    app = ui.App(ui.Inputs(tmp_path / "work", [sample_clip.parent]))
    values = {f.name: ui.component_spec(f)["value"] for f in sbsconv.ConvertOptions.fields()}
    assert values["model"] == DEFAULT_MODEL  # the page's default, left alone
    *_, (job, status, video, downloads, figures) = app.convert([], str(sample_clip), "",
                                                               *[values[n] for n in app.names])
    assert "Done" in status, status
    assert sbsconv.probe(video).num_frames == 15


# The README's fenced examples, run as written in a fresh folder with the sample clip (its first
# 0.4 s) for clip.mp4 / other.mp4 / film.mkv. A block preceded by `<!-- example: REASON -->` is not run
# here, and says why (a GPU, a network, or another runner).
_EXAMPLE_MARK = re.compile(r"<!--\s*example:\s*(.*?)\s*-->\s*$")


def readme_examples() -> list:
    lines = (ROOT / "README.md").read_text().splitlines()
    cases, i, mark = [], 0, None
    while i < len(lines):
        line = lines[i]
        found = _EXAMPLE_MARK.match(line.strip())
        if found:
            mark = found.group(1)
        elif line.startswith("```") and line.strip() != "```":
            language = line.strip("`").strip()
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
            code = "\n".join(lines[start:end])
            if language in ("python", "sh", "bash"):
                marks = [pytest.mark.skip(reason=f"README: {mark}")] if mark else []
                cases.append(pytest.param(language, code, id=f"README line {start}", marks=marks))
            mark = None
            i = end
        elif line.strip():
            mark = None
        i += 1
    return cases


@pytest.mark.parametrize(("language", "code"), readme_examples())
def test_readme_examples_run_as_written(language, code, hub_cache, sample_clip_short, tmp_path):
    for name in ("clip.mp4", "other.mp4", "film.mkv"):
        os.symlink(sample_clip_short, tmp_path / name)
    env = {**os.environ, **hubcache.hub_env(hub_cache)}
    if language == "python":
        program = "import sbsconv\n" + code
        proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
    else:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{code}\n---\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_quick_start_demo_runs_as_written(hub_cache, tmp_path):
    # The README's first command, as written, from another folder, with the default model in the
    # cache: it converts the bundled sample into ./sbsconv_sample_LR.mp4. (The Quick start's
    # other command, scripts/test.sh, is CI's test command itself.)
    env = {**os.environ, **hubcache.hub_env(hub_cache)}
    proc = subprocess.run([str(ROOT / "scripts" / "demo.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = tmp_path / "sbsconv_sample_LR.mp4"
    from sbsconv import samples

    assert sbsconv.probe(out).num_frames == sbsconv.probe(samples.path()).num_frames
    assert sbsconv.probe(out).stereo["layout"] == "side-by-side"


def test_a_3d_video_converted_again_is_told_so(offline_hub, sample_clip_short, tmp_path, caplog):
    # Note [3D input]: the default conversion's own output (side-by-side, said in its st3d box)
    # given back to convert(): it converts, and says first (a warning) and in its result that
    # the input already was 3D; an ordinary 2D video gets no such note
    first = sbsconv.convert(sample_clip_short, tmp_path / "clip_3d.mp4", progress=False)
    assert not [w for w in first.warnings if "already 3D" in w]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = sbsconv.convert(first.output, tmp_path / "again.mp4", progress=False)
    said = [str(w.message) for w in caught if issubclass(w.category, SbsconvWarning)]
    assert said and "already 3D (side-by-side" in said[0], said  # the first thing said
    assert [w for w in again.warnings if "already 3D (side-by-side" in w and "crop" in w]
    # on the command line the warning is on stderr, before the run's result
    env = {**os.environ, **hubcache.hub_env(offline_hub)}
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", "convert", first.output, str(tmp_path / "cli.mp4"),
                           "-q"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "already 3D (side-by-side" in proc.stderr
    # an Apple spatial video's picture is its first view, a 2D picture: it converts without the
    # warning (the log says which view)
    from helpers import data

    with caplog.at_level(logging.INFO, logger="sbsconv"):
        spatial = sbsconv.convert(data("apple_spatial_160x120.mp4"), tmp_path / "spatial_3d.mp4", progress=False)
    assert not [w for w in spatial.warnings if "already 3D" in w]
    assert "first view, the left eye" in caplog.text
    assert sbsconv.probe(spatial.output).width == 2 * 160


def test_a_video_given_without_a_command_is_told_the_command_and_that_runs(offline_hub, sample_clip_short,
                                                                            tmp_path, capsys):
    # `sbsconv clip.mp4 clip_3d.mp4`: the hint names the convert command; run as written (the
    # default model from the cache), it converts
    from sbsconv import cli

    assert cli.main([str(sample_clip_short), "clip_3d.mp4"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "not a command" in err and not (tmp_path / "clip_3d.mp4").exists()
    command = re.search(r"to convert a video: (sbsconv convert .+?) \(", err)
    assert command, err
    words = shlex.split(command.group(1))
    assert words[:2] == ["sbsconv", "convert"]
    env = {**os.environ, **hubcache.hub_env(offline_hub)}
    proc = subprocess.run([sys.executable, "-m", "sbsconv.cli", *words[1:], "--quiet"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sbsconv.probe(tmp_path / "clip_3d.mp4").num_frames == 6
    # a file that does not exist yet but names a video, options before it
    assert cli.main(["-v", "missing.mkv"]) == cli.EXIT_USAGE
    assert "sbsconv convert missing.mkv OUT" in capsys.readouterr().err
    # anything else is argparse's own complaint, with the list of commands
    with pytest.raises(SystemExit) as stop:
        cli.main(["frobnicate"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err

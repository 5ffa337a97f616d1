"""sbsconv-bench, Jupyter previews and the Colab notebook (issue 6)."""

from __future__ import annotations

import inspect
import json

import cv2
import numpy as np
import pytest
import torch

import sbsconv
from sbsconv import notebook, samples
from sbsconv.errors import OptionError

from helpers import REPO, ffprobe, run_python

NOTEBOOK = REPO / "notebooks" / "sbsconv_colab.ipynb"
FAST = {"input_size": 70, "progress": False}


# --- the notebook -----------------------------------------------------------------------------

def test_notebook_is_valid_nbformat4():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    tags = [set(c.metadata.get("tags", [])) for c in nb.cells if c.cell_type == "code"]
    assert any("colab" in t for t in tags), "the install and Drive cells are marked Colab-only"
    assert any("colab" not in t for t in tags)


def test_notebook_commands_take_user_input_as_arguments():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "shell=True" not in code and "os.system" not in code
    # no IPython shell escapes that would interpolate user input into a shell string
    assert not [line for line in code.splitlines() if line.lstrip().startswith("!")]


def test_form_fields_are_exactly_convert_options():
    expected = {f.name: f.default for f in sbsconv.ConvertOptions.fields()}
    assert notebook.convert_options() == expected
    assert list(notebook.convert_options()) == list(expected)
    # convert() takes exactly these as keywords (help() and tooltips show them)
    params = inspect.signature(sbsconv.convert).parameters
    assert {n: params[n].default for n in expected} == expected
    form = notebook.OptionsForm(divergence=3.0, layout="half-sbs")
    assert list(form.widgets) == list(expected)
    for f in sbsconv.ConvertOptions.fields():
        assert f.help in form.widgets[f.name].tooltip
    assert form.widgets["divergence"].value == 3.0
    assert form.widgets["layout"].value == "half-sbs"
    assert form.values() == {"divergence": 3.0, "layout": "half-sbs"}
    form.widgets["crf"].value = "20"
    assert form.values()["crf"] == 20
    form.widgets["percentiles"].value = "2, 98"
    assert form.values()["percentiles"] == (2.0, 98.0)
    assert form.options() == sbsconv.ConvertOptions(divergence=3.0, layout="half-sbs", crf=20,
                                                    percentiles=(2, 98))
    form.widgets["eye_size"].value = "1920x1080"
    assert form.values()["eye_size"] == (1920, 1080)
    form.widgets["percentiles"].value = "2, deep"
    with pytest.raises(OptionError):
        form.values()
    form.widgets["percentiles"].value = "98, 2"
    with pytest.raises(OptionError, match="percentiles"):
        form.values()


def test_form_rejects_unknown_options_and_bad_values():
    with pytest.raises(OptionError, match="unknown option 'strength'.*auto_strength"):
        notebook.OptionsForm(strength=2)
    with pytest.raises(OptionError, match="divergence"):
        notebook.OptionsForm(divergence=99)


def test_fetch_video_sources(tmp_path):
    assert notebook.fetch_video("sample") == samples.path()
    assert notebook.fetch_video(str(samples.path()), tmp_path) == samples.path()
    with pytest.raises(OptionError):
        notebook.fetch_video("  ")
    with pytest.raises(OptionError, match="Colab"):
        notebook.fetch_video("upload", tmp_path)
    with pytest.raises(sbsconv.errors.InputError):
        notebook.fetch_video(str(tmp_path / "missing.mp4"), tmp_path)


def test_environment_report_names_ffmpeg_and_encoders():
    report = notebook.environment_report(show=False)
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] is torch.cuda.is_available()
    assert "libx264" in report["encoders"] and report["encoders"]["libx264"] is True
    assert "h264_nvenc" in report["encoders"]
    assert report["ffmpeg"]


# The notebook runs headless, in both modes, with its default model from a filled Hugging Face
# cache: test_user_journeys.test_the_notebook_runs_headless_with_its_default_model.


# --- previews -------------------------------------------------------------------------------

def _decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image[:, :, ::-1]


def test_preview_renders_png_and_html(tmp_path, tiny_model):
    p = sbsconv.preview(samples.path(), at=[0.5, 2.0], model=tiny_model, **FAST)
    assert len(p.rows) == 2 and all(len(r) == 4 for r in p.rows)
    assert [panel.title.split(" (")[0] for panel in p.rows[0]] == ["frame 0.5 s", "depth", "full-sbs", "anaglyph"]
    picture = p.image()
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3
    decoded = _decode_png(p._repr_png_())
    np.testing.assert_array_equal(decoded, picture.permute(1, 2, 0).numpy())
    page = p._repr_html_()
    assert page.startswith("<figure") and "data:image/png;base64," in page and "anaglyph" in page
    assert p.save(tmp_path / "p.png").read_bytes() == p.png()
    assert "base64" in p.save(tmp_path / "p.html").read_text()
    # the packed panel is the layout: full-sbs is two eyes wide
    frame, packed = p.rows[0][0].image, p.rows[0][2].image
    assert packed.shape[2] == 2 * frame.shape[2]


def test_preview_anaglyph_follows_divergence(tiny_model):
    from sbsconv import stereo

    flat = sbsconv.preview(samples.path(), at=1.0, model=tiny_model, divergence=0.0, **FAST).rows[0]
    deep = sbsconv.preview(samples.path(), at=1.0, model=tiny_model, divergence=4.0, **FAST).rows[0]
    frame = flat[0].image
    # with no divergence both eyes are the frame itself, whatever the depth
    depth = torch.rand(1, 1, *frame.shape[1:])
    same_eyes = stereo.render(frame[None], depth=depth, layout="anaglyph", divergence=0.0)[0]
    assert (flat[3].image.float() - same_eyes.float()).abs().max() <= 1
    assert (deep[3].image.float() - same_eyes.float()).abs().mean() > 1.0
    assert torch.equal(flat[1].image, deep[1].image)  # the depth does not depend on divergence


def test_compare_variants_side_by_side(tiny_model):
    p = sbsconv.compare(samples.path(), at=1.0, model=tiny_model,
                        variants=[{"divergence": 1.0}, {"divergence": 4.0}], **FAST)
    assert len(p.rows) == 1 and len(p.rows[0]) == 1 + 2 * 2
    titles = [panel.title for panel in p.rows[0]]
    assert titles[1].startswith("divergence=1.0") and titles[3].startswith("divergence=4.0")
    assert not torch.equal(p.rows[0][2].image, p.rows[0][4].image)


@pytest.mark.parametrize("bad", [None, [], ["divergence"], [{"strength": 2}]])
def test_compare_rejects_bad_variants(bad, tiny_model):
    with pytest.raises(OptionError):
        sbsconv.compare(samples.path(), at=1.0, model=tiny_model, variants=bad, **FAST)


@pytest.mark.parametrize("at", [-1, "middle", True])
def test_preview_rejects_bad_times(at, tiny_model):
    with pytest.raises(OptionError):
        sbsconv.preview(samples.path(), at=at, model=tiny_model, **FAST)


def test_preview_rejects_unknown_options(tiny_model):
    with pytest.raises(OptionError, match="unknown option"):
        sbsconv.preview(samples.path(), model=tiny_model, depth_strength=2)


def test_previews_take_convert_options(tiny_model):
    options = sbsconv.ConvertOptions(model=tiny_model, input_size=70, divergence=4.0, layout="half-tb")
    by_object = sbsconv.preview(samples.path(), at=1.0, options=options).rows[0]
    by_keywords = sbsconv.preview(samples.path(), at=1.0, model=tiny_model, input_size=70, divergence=4.0,
                                  layout="half-tb").rows[0]
    assert [p.title for p in by_object] == [p.title for p in by_keywords]
    assert all(torch.equal(a.image, b.image) for a, b in zip(by_object, by_keywords, strict=True))
    # keywords change the options given; every value is checked before any work
    compared = sbsconv.compare(samples.path(), at=1.0, options=options, divergence=1.0,
                               variants=[{"layout": "full-sbs"}, {"divergence": 2.0}])
    assert len(compared.rows[0]) == 5
    with pytest.raises(OptionError, match="divergence"):
        sbsconv.preview(samples.path(), at=1.0, options=options, divergence=99)
    with pytest.raises(OptionError, match="layout"):
        sbsconv.compare(samples.path(), at=1.0, options=options, variants=[{"layout": "side"}])


# --- sbsconv-bench --------------------------------------------------------------------------

def test_bench_end_to_end(tmp_path, tiny_model, hub_cache):
    """One second of the sample clip, normalised to 1080p at 24 fps, through a tiny checkpoint,
    the default model by registry name from the Hugging Face cache (the way users reach it: the
    bench once crashed there), and a registry model that is not cached offline (listed as
    skipped, the run goes on)."""
    import hubcache

    code = "import sys; from sbsconv.bench import main; sys.exit(main(sys.argv[1:]))"
    done = run_python(code, "--seconds", "1", "--models",
                      f"{tiny_model},depth-anything-v2-small,depth-anything-v2-base",
                      "--device", "cpu", "--out", str(tmp_path / "runs"),
                      env=hubcache.hub_env(hub_cache), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["excerpt"]["height"] == 1080 and results["excerpt"]["fps"] == "24"
    assert results["excerpt"]["frames"] == 24
    ok, named, skipped = results["approaches"]
    assert ok["status"] == "ok" and ok["frames"] == 24
    assert named["approach"] == "depth-anything-v2-small" and named["status"] == "ok", named
    assert named["frames"] == 24
    assert set(ok["stages"]) >= {"decode", "depth", "stereo", "encode"}
    assert all(v > 0 for v in ok["stages"].values())
    assert skipped["approach"] == "depth-anything-v2-base" and skipped["status"] == "skipped"
    assert "offline" in skipped["reason"].lower() or "not in the cache" in skipped["reason"].lower()
    clip = folder / ok["clip"]
    streams = ffprobe(clip, "-show_streams")["streams"]
    video = [s for s in streams if s["codec_type"] == "video"][0]
    assert (int(video["width"]), int(video["height"])) == (2 * 1920, 1080)
    depth = sbsconv.probe(folder / ok["depth_clip"])
    assert depth.num_frames == 24
    sheet = cv2.imread(str(folder / results["contact_sheet"]))
    assert sheet is not None and sheet.shape[0] > 100
    table = (folder / "results.md").read_text()
    assert "| ok |" in table and "skipped" in table
    assert "depth-anything-v2-small" in done.stdout and "depth-anything-v2-base" in done.stdout


def test_bench_rejects_bad_arguments(tmp_path):
    code = "import sys; from sbsconv.bench import main; sys.exit(main(sys.argv[1:]))"
    done = run_python(code, "--seconds", "0", "--out", str(tmp_path))
    assert done.returncode == 2 and "--seconds" in done.stderr
    done = run_python(code, "--seconds", "1", "--input", str(tmp_path / "missing.mp4"), "--out", str(tmp_path))
    assert done.returncode == 1 and "error" in done.stderr


def test_bench_default_is_one_approach_per_family():
    from sbsconv import models
    from sbsconv.models.registry import families

    approaches = models.approaches()
    depth_families = {name for name, f in families().items() if f.product == "depth"}
    assert len(approaches) == len(depth_families) >= 3 and len(families()) > len(depth_families)  # + masks
    assert {models.spec(a).family for a in approaches} == depth_families
    assert "depth-anything-v2-small" in approaches and "video-depth-anything-small" in approaches

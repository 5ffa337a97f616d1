"""sbsconv.ConvertOptions: one typed, checked options object for convert(), the CLI, the
notebook form, previews and the engine."""

from __future__ import annotations

import dataclasses
import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import sbsconv
import sbsconv.engine
from helpers import data, ffprobe
from sbsconv import cli, conversion
from sbsconv.errors import OptionError
from sbsconv.options import GROUPS, Check, Choice, ConvertOptions, Range

FIELDS = ConvertOptions.fields()
BY_NAME = {f.name: f for f in FIELDS}

# convert()'s keyword options and defaults before ConvertOptions existed, written out by hand:
# the defaults must not move. (input_size became None, "the model's own": still 518 for the
# default model, see test_depth_anything_3.py::test_input_size_defaults_to_the_family_s.)
DEFAULTS = {
    "model": "depth-anything-v2-small", "checkpoint": None, "device": "auto", "precision": "auto",
    "batch_size": None, "input_size": None, "temporal_mode": "windowed", "layout": "full-sbs",
    "eye_size": None, "keep_aspect": True, "apple_metadata": True, "fps": None, "start": None, "duration": None,
    "divergence": 2.0, "convergence": 0.5, "max_shift": None, "synthetic_view": "both",
    "ipd_mm": 63.0, "fov_degrees": None, "screen_distance": 2.0, "fill": "temporal", "edge_dilation": 2,
    "percentiles": (1.0, 99.0), "range_decay": 0.9, "align": True, "smoothing": 0.0,
    "motion_threshold": 0.08, "scene_cuts": True, "cut_sensitivity": 0.5, "min_scene_length": 8,
    "comfort_limit": 3.0, "auto_strength": False,
    "encoder": "auto", "codec": "auto", "crf": None, "cq": None, "quality": None, "preset": None,
    "bit_depth": 8, "encoders": None, "audio": "copy", "subtitles": "copy", "hwaccel": "auto", "stream": None,
    "headset_suffix": False, "preview_every": None, "depth_video": None,
    "depth_out": None, "depth_format": "gray16", "max_depth": None, "depth_precision": "float32",
    "point_clouds_every": None, "point_cloud_scale": None, "infill_mask": None, "mask_out": None, "masks": None, "mask_model": "u2netp", "depth": None,
    "resume": True, "segment_seconds": 10.0,
}


# ---- the fields --------------------------------------------------------------------------------

def test_every_field_has_help_group_and_constraint():
    for f in FIELDS:
        assert f.help.strip(), f.name
        assert f.group in GROUPS, f.name
        assert isinstance(f.constraint, Range | Choice | Check), f.name
        assert f.describe()
        assert f.nullable == (f.default is None), f.name
    assert {f.group for f in FIELDS} == set(GROUPS)
    assert ConvertOptions.names() == tuple(f.name for f in FIELDS)
    assert {f.name: f.help for f in FIELDS} == conversion.OPTION_HELP


def test_defaults_are_what_convert_used_to_default_to():
    assert {f.name: f.default for f in FIELDS} == DEFAULTS
    assert list(ConvertOptions.names()) == list(DEFAULTS)  # the order of convert()'s signature
    assert ConvertOptions().to_dict() == DEFAULTS  # the defaults pass their own checks unchanged
    assert ConvertOptions().non_defaults() == {}
    assert repr(ConvertOptions()) == "ConvertOptions()"


def test_types_and_kinds_come_from_the_annotations():
    assert BY_NAME["divergence"].type is float and BY_NAME["divergence"].kind is float
    assert BY_NAME["crf"].type == int | None and BY_NAME["crf"].kind is int
    assert BY_NAME["align"].kind is bool and BY_NAME["percentiles"].kind is tuple
    assert BY_NAME["fps"].kind is BY_NAME["eye_size"].kind is BY_NAME["model"].kind is str
    assert BY_NAME["eye_size"].flag == "--eye-size"
    assert BY_NAME["crf"].parse("20") == 20 and BY_NAME["crf"].parse("") is None
    assert BY_NAME["crf"].parse("none") is None
    assert BY_NAME["percentiles"].parse("2, 98") == (2.0, 98.0)
    assert BY_NAME["align"].parse("no") is False and BY_NAME["divergence"].parse("2.5") == 2.5
    for field, text in [("crf", "x"), ("align", "maybe"), ("divergence", "strong"),
                        ("percentiles", "2, deep")]:
        with pytest.raises(OptionError, match=field):
            BY_NAME[field].parse(text)


# ---- constraints, generated from the metadata ----------------------------------------------------

def _range_cases(f):
    r = f.constraint
    bad = [r.high + max(1.0, abs(r.high)), r.low - max(1.0, abs(r.low)), "1", float("nan"),
           float("inf"), True]
    good = []
    (bad if r.low_open else good).append(r.low)
    (bad if r.high_open else good).append(r.high)
    if r.integer:
        bad.append(r.low + 0.5)
    return bad, good


# Fields whose constraint is a custom check: bad and good values by hand.
CUSTOM = {
    "model": (["", 3], ["depth-pro", Path("/models/x.safetensors")]),
    "checkpoint": (["", 3], [None, Path("w.pth")]),
    "device": ([3, 1.5, "tpu", "cuda:x", "", "xpu"], ["auto", "cpu", "cuda:1", "mps", torch.device("cuda", 0)]),
    "eye_size": (["huge", (1, 1), (720,), True, 1000, "1920x"],
                 [None, 1080, "4k", (1280, 720), "1280x720"]),
    "keep_aspect": (["no", 2, 0.5], [True, False, 0, 1]),
    "fps": (["fast", 0, -24, True, 1001, float("nan"), "1e400", Fraction(1, 10**30)],
            [None, 24, 23.976, "30000/1001", Fraction(60, 1)]),
    "percentiles": ([(99, 1), (5, 5), (1,), (1, 2, 3), (-1, 50), (1, 101), "1,99"],
                    [(0, 100), [2, 98]]),
    "align": (["yes"], [False]),
    "scene_cuts": (["true"], [False]),
    "auto_strength": ([2], [True]),
    "encoder": ([264, b"x"], ["libx265"]),
    "preset": ([3], [None, "slow"]),
    "hwaccel": ([1], ["none"]),
    "headset_suffix": (["on"], [True]),
    "apple_metadata": (["yes", 2], [False, True]),
    "depth_video": (["depth.avi", "depth", 3], [None, "depth.mkv", Path("d/depth.MP4")]),
    "resume": (["false"], [False]),
    "depth_out": (["", 3], [None, "clip_depth.mkv", Path("frames")]),
    "infill_mask": (["mask.mp4", "mask", 3], [None, "mask.mkv", Path("m/MASK.MKV")]),
    "mask_out": (["mask.mp4", "mask", 3], [None, "mask.mkv", Path("m/MASK.MKV")]),
    "masks": (["", 3], [None, "clip_mask.mkv", Path("m/masks.mkv")]),
    "mask_model": (["", 3, None], ["u2netp", Path("/models/u2net.pth")]),
    "convergence": (["middle", -0.1, 1.5, True, None, float("nan")], [0, 0.5, 1, "subject", "0.3", "Subject"]),
    "depth": (["", 3], [None, "clip_depth.mkv", Path("d/depth.json")]),
}


def _cases():
    for f in FIELDS:
        if isinstance(f.constraint, Range):
            bad, good = _range_cases(f)
        elif isinstance(f.constraint, Choice):
            bad, good = ["no-such-choice", 9, True], list(f.constraint.values)
        else:
            assert f.name in CUSTOM, f"write bad and good values for {f.name} in CUSTOM"
            bad, good = CUSTOM[f.name]
        if not f.nullable:
            bad = [*bad, None]
        for value in bad:
            yield pytest.param(f.name, value, False, id=f"{f.name}-bad-{value!r}")
        for value in good:
            yield pytest.param(f.name, value, True, id=f"{f.name}-good-{value!r}")


@pytest.mark.parametrize(("name", "value", "ok"), list(_cases()))
def test_each_constraint_rejects_bad_values_and_takes_good_ones(name, value, ok):
    extra = {"codec": "hevc"} if name == "bit_depth" else {}
    if ok:
        ConvertOptions(**{name: value}, **extra)
    else:
        with pytest.raises(OptionError, match=name):
            ConvertOptions(**{name: value}, **extra)


def test_custom_cases_cover_exactly_the_custom_checks():
    assert set(CUSTOM) >= {f.name for f in FIELDS if isinstance(f.constraint, Check)}
    assert set(CUSTOM) <= set(BY_NAME)


# ---- constraints, by hand (these fail if the metadata were wrong) -------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layout": "side-by-side"}, "layout must be one of full-sbs, half-sbs"),
    ({"layout": "separate"}, "layout"),  # stereo.render's, not a video layout
    ({"divergence": 20.01}, r"divergence must be within 0\.\.20, got 20\.01"),
    ({"convergence": -0.1}, "convergence"),
    ({"crf": 52}, r"crf must be within 0\.\.51"),
    ({"crf": 20.5}, "crf must be an integer"),
    ({"cq": -1}, "cq"),
    ({"quality": 0}, r"quality must be within 1\.\.100"),
    ({"quality": 101}, "quality"),
    ({"screen_distance": 0.001}, "screen_distance"),
    ({"duration": 0}, "duration"),
    ({"duration": -1}, "duration"),
    ({"start": -0.5}, "start"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1025}, "batch_size"),
    ({"input_size": 13}, "input_size"),
    ({"min_scene_length": 0}, "min_scene_length"),
    ({"edge_dilation": 33}, "edge_dilation"),
    ({"range_decay": 1.0}, "range_decay"),
    ({"smoothing": 0.995}, "smoothing"),
    ({"motion_threshold": 0}, "motion_threshold"),
    ({"comfort_limit": 0.05}, "comfort_limit"),
    ({"ipd_mm": 0.5}, "ipd_mm"),
    ({"fov_degrees": 180}, "fov_degrees"),
    ({"max_shift": -1}, "max_shift"),
    ({"segment_seconds": 0.05}, "segment_seconds"),
    ({"preview_every": 0}, "preview_every"),
    ({"stream": -5}, "stream"),
    ({"stream": 1.5}, "stream must be an integer"),
    ({"codec": "vp9"}, "codec must be one of auto, h264, hevc"),
    ({"bit_depth": 12, "codec": "hevc"}, "bit_depth"),
    ({"bit_depth": 10, "codec": "h264"}, "hevc"),
    ({"audio": "mp3"}, "audio"),
    ({"subtitles": "burn"}, "subtitles"),
    ({"precision": "fp8"}, "precision"),
    ({"temporal_mode": "online"}, "temporal_mode"),
    ({"synthetic_view": "center"}, "synthetic_view"),
    ({"percentiles": (99, 1)}, "percentiles must be an increasing"),
    ({"percentiles": (1, 120)}, r"percentiles\[1\]"),
    ({"fps": "fast"}, "fps must be a positive number or fraction"),
    ({"fps": 0}, r"fps must be within \(0, 1000\]"),
    ({"fps": 1000.5}, "fps"),
    ({"eye_size": "huge"}, "eye_size"),
    ({"device": 0}, "device must be a string"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ({"resume": "no"}, "resume must be True or False"),
    ({"depth_video": "depth.avi"}, "depth_video must end in .mp4"),
])
def test_bad_values_by_hand(kwargs, match):
    with pytest.raises(OptionError, match=match):
        ConvertOptions(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"divergence": 20}, {"divergence": 0}, {"convergence": 1}, {"crf": 0}, {"crf": 51},
    {"quality": 1}, {"quality": 100}, {"screen_distance": 0.0011}, {"duration": 0.001},
    {"start": 0}, {"batch_size": 1024},
    {"input_size": 14}, {"range_decay": 0.999}, {"smoothing": 0.99}, {"motion_threshold": 0.001},
    {"comfort_limit": 0.1}, {"fov_degrees": 179}, {"segment_seconds": 0.1}, {"preview_every": 0.01},
    {"stream": 0}, {"bit_depth": 10, "codec": "hevc"}, {"percentiles": (0, 100)}, {"fps": 1000},
    {"eye_size": "2160p"}, {"layout": "anaglyph-gray"}, {"synthetic_view": "right"},
])
def test_good_values_by_hand(kwargs):
    ConvertOptions(**kwargs)


def test_values_are_stored_normalised():
    o = ConvertOptions(model=Path("m/x.pth"), fps="30000/1001", percentiles=[2, 98],
                       eye_size="1920x1080", crf=20.0, bit_depth=10.0, codec="hevc", divergence=3,
                       align=1, device="cpu")
    assert o.model == os.path.join("m", "x.pth")
    assert o.fps == Fraction(30000, 1001) and isinstance(o.fps, Fraction)
    assert o.percentiles == (2.0, 98.0) and isinstance(o.percentiles, tuple)
    assert o.eye_size == (1920, 1080)
    assert o.crf == 20 and type(o.crf) is int and type(o.bit_depth) is int and o.bit_depth == 10
    assert type(o.divergence) is float and o.align is True
    assert ConvertOptions(fps=29.97).fps == Fraction(2997, 100)
    # a fraction the engine's 32-bit rationals cannot hold becomes the nearest one that fits
    rate = ConvertOptions(fps=Fraction(10**9 + 7, 10**7 + 1)).fps
    assert rate.denominator <= 100_000
    assert math.isclose(rate, (10**9 + 7) / (10**7 + 1), rel_tol=1e-6)
    assert hash(o) == hash(dataclasses.replace(o))
    assert eval(repr(o), {"ConvertOptions": ConvertOptions, "Fraction": Fraction}) == o


# ---- replace, unknown names ----------------------------------------------------------------------

def test_replace_checks_again_and_leaves_the_original():
    o = ConvertOptions(divergence=2.5, codec="hevc", bit_depth=10)
    changed = ConvertOptions(divergence=2.5, codec="hevc", bit_depth=10, convergence=0.7)
    assert o.replace(convergence=0.7) == changed
    with pytest.raises(OptionError, match="divergence"):
        o.replace(divergence=99)
    with pytest.raises(OptionError, match="hevc"):
        o.replace(codec="h264")  # the rule between options is checked again too
    with pytest.raises(OptionError, match="divergence"):
        dataclasses.replace(o, divergence=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.divergence = 3.0  # type: ignore[misc]
    assert o.divergence == 2.5 and o.validate() is o


@pytest.mark.parametrize(("make", "suggestion"), [
    (lambda: ConvertOptions(divergance=2), "divergence"),
    (lambda: ConvertOptions().replace(eyesize="1080"), "eye_size"),
    (lambda: dataclasses.replace(ConvertOptions(), crff=20), "crf"),
    (lambda: ConvertOptions.merged(None, {"smothing": 0.5}), "smoothing"),
    (lambda: sbsconv.convert("in.mp4", "out.mp4", progres=False), "progress"),
    (lambda: sbsconv.convert("in.mp4", "out.mp4", ConvertOptions(), layot="half-sbs"), "layout"),
])
def test_unknown_names_are_option_errors_with_a_suggestion(make, suggestion):
    with pytest.raises(OptionError, match=f"unknown option .*did you mean '{suggestion}'"):
        make()


def test_unknown_name_without_a_close_match():
    with pytest.raises(OptionError, match=r"unknown option 'xyzzy'; .*names\(\)"):
        ConvertOptions(xyzzy=1)


def test_convert_takes_only_convert_options_as_options():
    with pytest.raises(OptionError, match="ConvertOptions"):
        sbsconv.convert("in.mp4", "out.mp4", {"divergence": 2.0})


# ---- the command line ---------------------------------------------------------------------------

def _convert_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["convert"]


def test_cli_flags_are_the_fields():
    p = _convert_parser()
    # the flags of convert_many's own arguments (which files, how many workers) are not options
    many = {"--output-dir", "--recursive", "--pattern", "--no-skip-existing", "--devices", "--on-error",
            "--backend", "--address", "--retries", "--split", "--warm-up"}
    flags = {s for a in p._actions for s in a.option_strings} - {"-h", "--help", "-q", "--quiet", "--debug"} - many
    expected = {f.flag for f in FIELDS} | {"--no-" + f.flag[2:] for f in FIELDS if f.kind is bool}
    assert flags == expected
    for action in p._actions:
        if action.option_strings and action.dest in BY_NAME:
            f = BY_NAME[action.dest]
            assert action.default == f.default
            assert f.help.replace("%", "%%") in action.help
            if isinstance(f.constraint, Choice):
                assert tuple(action.choices) == f.constraint.values


def test_cli_arguments_become_convert_options():
    p = cli.build_parser()
    args = p.parse_args(["convert", "in.mp4", "out.mp4"])
    assert cli.options_from_args(args) == ConvertOptions()
    args = p.parse_args(["convert", "in.mp4", "out.mp4", "--divergence", "2.5", "--no-resume",
                         "--crf", "20", "--percentiles", "2", "98", "--eye-size", "1280x720",
                         "--fps", "30000/1001", "--layout", "half-tb", "--codec", "hevc",
                         "--bit-depth", "10"])
    assert cli.options_from_args(args) == ConvertOptions(
        divergence=2.5, resume=False, crf=20, percentiles=(2, 98), eye_size=(1280, 720),
        fps=Fraction(30000, 1001), layout="half-tb", codec="hevc", bit_depth=10)
    with pytest.raises(SystemExit):
        p.parse_args(["convert", "in.mp4", "out.mp4", "--layout", "side"])


# ---- what the engine receives -------------------------------------------------------------------

class _Stop(Exception):
    pass


@pytest.fixture
def engine_calls(monkeypatch):
    """The option dicts convert() hands the engine; the run stops there."""
    calls = []

    def engine(options):
        calls.append(dict(options))
        raise _Stop

    # the plan's engine options, as they go to the typed classes (sbsconv.engine.core_options)
    monkeypatch.setattr(sbsconv.engine, "core_options", engine)
    monkeypatch.delenv("SBSCONV_CHECK_FLOAT64", raising=False)
    monkeypatch.delenv("SBSCONV_TEST_FAULT", raising=False)
    return calls


def _engine_options(calls, *args, **kwargs):
    with pytest.raises(_Stop):
        sbsconv.convert(*args, progress=False, **kwargs)
    options = dict(calls[-1])
    options["model"] = type(options["model"]).__name__  # a new model object each time
    return options


def test_keywords_and_options_object_reach_the_engine_alike(engine_calls, tiny_model, tmp_path):
    clip = data("bt601_limited_range.mp4")
    out = tmp_path / "out.mp4"
    kwargs = {"model": str(tiny_model), "input_size": 70, "divergence": 2.5, "layout": "half-tb",
              "fps": "30000/1001", "crf": 20, "percentiles": [2, 98], "eye_size": "1080",
              "stream": 0}
    by_keywords = _engine_options(engine_calls, clip, out, **kwargs)
    by_object = _engine_options(engine_calls, clip, out, ConvertOptions(**kwargs))
    half = {k: v for k, v in kwargs.items() if k not in ("crf", "layout")}
    by_both = _engine_options(engine_calls, clip, out, ConvertOptions(**half), crf=20,
                              layout="half-tb")
    assert by_keywords == by_object == by_both
    o = by_keywords
    assert o["input"] == os.fspath(clip) and o["writer"]["path"] == os.fspath(out)
    assert o["stream"] == 0 and o["fps"] == Fraction(30000, 1001)
    assert o["resume"] is False  # a resampled run does not resume
    assert o["stabilizer"] == {"relative": True, "low_percentile": 2.0, "high_percentile": 98.0,
                               "range_decay": 0.9, "align": True, "alpha": 0.0,
                               "motion_threshold": 0.08}
    assert o["disparity"] == {"divergence": 2.5, "max_shift": None, "convergence": 0.5,
                              "ipd_metres": 0.063, "fov_degrees": None, "screen_distance": 2.0}
    assert o["stereo"]["layout"] == "half-tb" and o["stereo"]["eye_height"] == 1080
    assert o["writer"]["crf"] == 20 and o["writer"]["stereo"] == "tb"
    assert o["writer"]["preset"] == ""
    assert o["segment_frames"] == round(10 * 30000 / 1001)
    assert o["check_float64"] is False and o["fault"] == "" and len(o["fingerprint"]) == 64


def test_engine_defaults_and_special_modes(engine_calls, tiny_model, tmp_path):
    clip = data("bt601_limited_range.mp4")
    base = ConvertOptions(model=str(tiny_model), input_size=70, device="cpu")
    o = _engine_options(engine_calls, clip, tmp_path / "out.mp4", base)
    info = sbsconv.probe(clip)
    assert o["start"] is None and o["duration"] is None and o["stream"] == -1 and o["fps"] is None
    assert o["resume"] is True and o["batch_size"] == 2 and o["device"] == "cpu"
    assert o["segment_frames"] == round(10 * float(info.fps))
    assert o["writer"]["audio"] == "copy" and o["writer"]["bit_depth"] == 8
    assert o["writer"]["crf"] is None
    assert o["depth_video"] is None and o["image_dir"] is None
    preview = _engine_options(engine_calls, clip, tmp_path / "p.mp4", base, preview_every=1.0)
    assert preview["resume"] is False and preview["preview_every"] == 1.0
    assert preview["writer"]["audio"] == preview["writer"]["subtitles"] == "none"
    assert preview["image_dir"] == str(tmp_path / "p_frames")
    depth = _engine_options(engine_calls, clip, tmp_path / "d.mp4", base,
                            depth_video=tmp_path / "d.mkv")
    assert depth["depth_video"] == str(tmp_path / "d.mkv") and depth["resume"] is False
    suffixed = _engine_options(engine_calls, clip, tmp_path / "s.mp4", base, headset_suffix=True)
    assert suffixed["writer"]["path"] == str(tmp_path / "s_LR.mp4")


def test_debug_switches_come_from_the_environment_and_stay_out_of_the_fingerprint(
        engine_calls, tiny_model, tmp_path, monkeypatch):
    clip = data("bt601_limited_range.mp4")
    options = ConvertOptions(model=str(tiny_model), input_size=70)
    plain = _engine_options(engine_calls, clip, tmp_path / "out.mp4", options)
    monkeypatch.setenv("SBSCONV_CHECK_FLOAT64", "1")
    monkeypatch.setenv("SBSCONV_TEST_FAULT", "decode:3")
    switched = _engine_options(engine_calls, clip, tmp_path / "out.mp4", options)
    assert switched["check_float64"] is True and switched["fault"] == "decode:3"
    assert switched["fingerprint"] == plain["fingerprint"]
    monkeypatch.setenv("SBSCONV_CHECK_FLOAT64", "0")
    zero = _engine_options(engine_calls, clip, tmp_path / "out.mp4", options)
    assert zero["check_float64"] is False
    other = _engine_options(engine_calls, clip, tmp_path / "out.mp4", options, divergence=3.0)
    assert other["fingerprint"] != plain["fingerprint"]


def test_bad_options_fail_before_the_input_is_read(tmp_path):
    # no such input: the options are refused first, and nothing is written
    with pytest.raises(OptionError, match="eye_size"):
        sbsconv.convert(tmp_path / "missing.mp4", tmp_path / "out.mp4", eye_size="huge")
    with pytest.raises(OptionError, match="depth_video"):
        sbsconv.convert(tmp_path / "missing.mp4", tmp_path / "out.mp4",
                        depth_video=tmp_path / "d.avi")
    assert os.listdir(tmp_path) == []


def test_a_conversion_with_an_options_object(tiny_model, tmp_path):
    options = ConvertOptions(model=str(tiny_model), input_size=70, preset="ultrafast", duration=0.2)
    result = sbsconv.convert(data("bt601_limited_range.mp4"), tmp_path / "out.mp4", options,
                             progress=False, layout="half-sbs")
    assert result.options == options.replace(layout="half-sbs") and result.layout == "half-sbs"
    assert ffprobe(result.output, "-show_streams")["streams"][0]["codec_type"] == "video"


def test_a_device_sbsconv_does_not_run_on_is_refused_at_every_door(tiny_model, tmp_path):
    # the options, a model's loading, the reader and a batch's workers say the same, before any work
    from sbsconv import media, models

    with pytest.raises(OptionError, match="device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"):
        sbsconv.convert("never-read.mp4", tmp_path / "out.mp4", model=str(tiny_model), device="tpu")
    with pytest.raises(OptionError, match="device must be auto, cpu, cuda, cuda:N or mps, got 'cuda:x'"):
        models.load(str(tiny_model), device="cuda:x")
    with pytest.raises(OptionError, match="device must be cpu, cuda, cuda:N or mps, got 'xpu'"):
        next(iter(media.read_frames("never-read.mp4", device="xpu")))
    with pytest.raises(OptionError, match=r"devices\[1\] must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"):
        sbsconv.convert_many(["never-read.mp4"], tmp_path / "out", model=str(tiny_model), devices=["cpu", "tpu"])
    assert not (tmp_path / "out").exists()

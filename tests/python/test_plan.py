"""One way through the Python layer (Note [Conversion plan] in python/sbsconv/plan.py): every
entry point builds its engine run with sbsconv.plan.build_plan, so the same options mean the
same run whichever door they come through."""

from __future__ import annotations

import pytest
import sbsconv
from sbsconv import plan as planning
from sbsconv.depthio import DepthFromFile
from sbsconv.models import DepthModel


class _Stop(Exception):
    """Raised once the plan is made: nothing runs."""


@pytest.fixture
def plans(monkeypatch) -> list:
    made = []
    build = planning.build_plan

    def recording(*args, **kwargs):
        made.append(build(*args, **kwargs))
        raise _Stop

    monkeypatch.setattr(planning, "build_plan", recording)
    return made


def _what_runs(p: planning.ConversionPlan) -> dict:
    """What the same options must decide alike at every entry point."""
    engine = p.engine
    writer = engine["writer"]
    return {"depth": p.depth_name, "kind": type(p.depth).__name__, "precision": p.precision,
            "batch": (p.batch_size, p.batch_size_auto), "device": engine["device"],
            "stabilizer": engine["stabilizer"], "disparity": engine["disparity"], "comfort": engine["comfort"],
            "stereo": engine["stereo"], "cuts": (engine["detect_cuts"], engine["cut_sensitivity"]),
            "encoder": (writer["codec"], writer["encoder"], writer["preset"], writer["crf"], writer["bit_depth"])}


def test_convert_export_parts_and_the_web_app_make_the_same_plan(plans, tiny_model, sample_clip_short, tmp_path):
    from sbsconv import ui
    from sbsconv.conversion import convert_part

    settings = {"model": str(tiny_model), "input_size": 70, "divergence": 3.0, "layout": "half-sbs", "crf": 20}
    with pytest.raises(_Stop):
        sbsconv.convert(sample_clip_short, tmp_path / "a.mp4", progress=False, **settings)
    with pytest.raises(_Stop):
        sbsconv.export_depth(sample_clip_short, tmp_path / "a_depth.mkv", progress=False, **settings)
    with pytest.raises(_Stop):
        convert_part(str(sample_clip_short), str(tmp_path / "part.nut"), sbsconv.ConvertOptions(**settings),
                     start=0.0, duration=0.2, output_start=0.0, timeline_start=0.0,
                     final_output=str(tmp_path / "joined.mp4"))
    app = ui.App(ui.Inputs(tmp_path / "work", [sample_clip_short.parent, tiny_model.parent]))
    values = {f.name: ui.component_spec(f)["value"] for f in sbsconv.ConvertOptions.fields()}
    values.update({k: str(v) for k, v in settings.items()})
    list(app.convert([], str(sample_clip_short), "", *[values[n] for n in app.names]))
    assert [p.purpose for p in plans] == ["convert", "export", "part", "convert"]
    decided = [_what_runs(p) for p in plans]
    assert decided[0]["kind"] == "DepthModel" and decided[0]["batch"] == (2, True)
    for other in decided[1:]:
        assert other == decided[0]
    # the purposes differ where they must, and only there
    convert_plan, export_plan, part_plan, app_plan = plans
    assert convert_plan.engine["resume"] and len(convert_plan.engine["fingerprint"]) == 64
    assert export_plan.engine["render_stereo"] is False and export_plan.engine["fingerprint"] == ""
    assert part_plan.engine["part"] is True and part_plan.engine["resume"] is False
    assert part_plan.engine["writer"]["apple"] == convert_plan.engine["writer"]["apple"] is not None
    assert app_plan.options == convert_plan.options


def test_a_plan_for_a_model_holds_the_model(plans, tiny_model, sample_clip_short, tmp_path):
    with pytest.raises(_Stop):
        sbsconv.convert(sample_clip_short, tmp_path / "a.mp4", model=str(tiny_model), input_size=70, progress=False)
    model_plan = plans[-1]
    assert isinstance(model_plan.depth, DepthModel) and model_plan.model is model_plan.depth
    assert model_plan.engine["depth_source"] is None and model_plan.engine["model"] is not None
    assert model_plan.precision == model_plan.depth.precision != "auto"


def test_resume_identity_ignores_the_spelling_of_paths(tiny_model, sample_clip_short, tmp_path, monkeypatch):
    options = sbsconv.ConvertOptions(model=str(tiny_model), input_size=70)
    monkeypatch.chdir(sample_clip_short.parent)
    relative = planning.build_plan(sample_clip_short.name, str(tmp_path / "o.mp4"), options)
    monkeypatch.chdir(tmp_path)
    absolute = planning.build_plan(str(sample_clip_short.resolve()), "o.mp4", options, depth=relative.depth)
    assert relative.engine["fingerprint"] == absolute.engine["fingerprint"]
    other = planning.build_plan(str(sample_clip_short), "o.mp4", options.replace(divergence=3.0),
                                depth=relative.depth)
    assert other.engine["fingerprint"] != relative.engine["fingerprint"]
    # an automatic batch size is the engine's to keep (the journal); a given one is identity
    given = planning.build_plan(str(sample_clip_short), "o.mp4", options.replace(batch_size=2),
                                depth=relative.depth)
    assert relative.batch_size == given.batch_size == 2
    assert relative.engine["batch_size_auto"] and not given.engine["batch_size_auto"]
    assert given.engine["fingerprint"] != relative.engine["fingerprint"]


def test_a_plan_for_a_depth_file_holds_no_model(tiny_model, sample_clip_short, tmp_path):
    exported = sbsconv.export_depth(sample_clip_short, tmp_path / "d.mkv", model=str(tiny_model), input_size=70,
                                    progress=False)
    p = planning.build_plan(str(sample_clip_short), str(tmp_path / "o.mp4"),
                            sbsconv.ConvertOptions(depth=exported.path, model="not-loaded"))
    assert isinstance(p.depth, DepthFromFile) and p.model is None and p.precision == ""
    assert p.engine["model"] is None and p.engine["depth_source"]["path"] == exported.path


def test_the_engines_result_is_read_field_by_field():
    # a field the engine stops sending fails at the boundary, naming it (not a silent default)
    from sbsconv.engine import EngineRun
    from sbsconv.errors import InternalError

    stage = {"name": "depth", "frames": 4, "busy_seconds": 2.0, "batches": 2, "host_syncs": 0, "threads": 2,
             "threads_after_model": 0}
    raw = {"output": "o.mp4", "frames": 4, "resumed_from": 0, "batch_size": 2, "seconds": 1.0, "width": 8,
           "height": 4, "stages": [stage], "encoder": "libx264", "skipped_encoders": [], "encoder_preset": "fast",
           "encoder_preset_reason": "", "encoder_instances": 1, "chunk_frames": 0,
           "streams": [], "warnings": ["w"], "cuts": [0], "comfort": [],
           "fov_degrees": None, "damaged_frames": 0, "truncated": False, "depth_export": None,
           "mask_export": None, "screen_plane": [0.5, 0.25, 0.75, 0.5]}
    run = EngineRun.from_core(raw)
    assert run.stage("depth").fps == 2.0 and run.warnings == ("w",) and run.cuts == (0,)
    assert run.screen_plane == (0.5, 0.25, 0.75, 0.5)
    with pytest.raises(InternalError, match="batch_size"):
        EngineRun.from_core({k: v for k, v in raw.items() if k != "batch_size"})
    with pytest.raises(InternalError, match="threads"):
        EngineRun.from_core({**raw, "stages": [{k: v for k, v in stage.items() if k != "threads"}]})


def test_the_binding_refuses_an_unknown_or_a_missing_engine_option(tiny_model, sample_clip_short, tmp_path):
    # Note [Engine options at the boundary]: typed classes, every field required, no silent
    # default on either side
    from sbsconv._native import _core
    from sbsconv.engine import core_options
    from sbsconv.errors import InternalError

    p = planning.build_plan(str(sample_clip_short), str(tmp_path / "o.mp4"),
                            sbsconv.ConvertOptions(model=str(tiny_model), input_size=70))
    typed = core_options(p.engine)
    assert isinstance(typed, _core.EngineOptions) and isinstance(typed.stereo, _core.StereoOptions)
    assert typed.stereo.fill == "temporal" and typed.writer.path == p.engine["writer"]["path"]
    with pytest.raises(InternalError, match="WriterOptions: unknown bitrate$"):
        core_options({**p.engine, "writer": {**p.engine["writer"], "bitrate": 5}})
    with pytest.raises(InternalError, match="EngineOptions: unknown batchsize$"):
        core_options({**p.engine, "batchsize": 4})
    without = {k: v for k, v in p.engine.items() if k != "segment_frames"}
    with pytest.raises(InternalError, match="EngineOptions: missing segment_frames$"):
        core_options(without)
    stereo = {k: v for k, v in p.engine["stereo"].items() if k != "keep_aspect"}
    with pytest.raises(InternalError, match="StereoOptions: missing keep_aspect$"):
        core_options({**p.engine, "stereo": stereo})
    with pytest.raises(TypeError):  # the engine itself takes nothing but its typed options
        _core.Engine(p.engine)


def test_the_cuda_batch_is_measured_once_per_model_and_frame_size(tiny_model, monkeypatch):
    # fitting_batch runs the model on one and on two frames to measure its memory per frame:
    # once per checkpoint, device and frame size in a process (every later file of a batch
    # only asks the device's free memory again). CUDA is stood in for here.
    import torch

    from sbsconv import models

    model = models.load(str(tiny_model), device="cpu", input_size=70)
    ran: list[int] = []
    free = [8 * 2**30]
    monkeypatch.setattr(models, "_MEMORY_PER_FRAME", {})
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(model, "infer", lambda frames: ran.append(frames.shape[0]))
    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: (50 + 100 * ran[-1]) * 2**20)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (free[0], 16 * 2**30))
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *a, device=None, **k: zeros(*a, **k))  # blank frames, on the CPU
    first, reason = model.fitting_batch(720, 1280)
    assert ran == [1, 2] and "GiB free" in reason
    assert model.fitting_batch(720, 1280)[0] == first and ran == [1, 2]  # measured once
    free[0] = 2 * 2**30
    assert model.fitting_batch(720, 1280)[0] < first and ran == [1, 2]  # the free memory is asked again
    model.fitting_batch(1080, 1920)
    assert ran == [1, 2, 1, 2]  # another frame size: measured again


@pytest.mark.parametrize("start", [0.4, 30.0])
def test_a_start_past_the_end_is_refused_before_the_model_loads(sample_clip_short, tmp_path, start, capsys):
    # 0.4 s long: a window from its end or beyond selects no frame. The model named does not
    # exist: the start is what is refused, before anything is loaded or written.
    out = tmp_path / "out.mp4"
    with pytest.raises(sbsconv.errors.OptionError, match=rf"start={start:g} s is at or past the end of the video, "
                                                          r"which is 0\.4 s long"):
        sbsconv.convert(sample_clip_short, out, model=str(tmp_path / "no-such-model"), start=start,
                        progress=False)
    assert not out.exists()
    from sbsconv import cli

    assert cli.main(["convert", str(sample_clip_short), str(out), "--start", str(start),
                     "--model", str(tmp_path / "no-such-model")]) == 2
    assert "past the end of the video" in capsys.readouterr().err
    assert not out.exists()


def test_a_start_within_the_video_runs(tiny_model, sample_clip_short, tmp_path):
    result = sbsconv.convert(sample_clip_short, tmp_path / "out.mp4", model=str(tiny_model), start=0.2,
                             input_size=70, preset="ultrafast", progress=False, resume=False)
    assert 0 < result.frames < 6


@pytest.mark.parametrize("layout, says", [
    ("side-by-side", True), ("top-bottom", True), ("side-by-side (right eye first)", True),
    ("frame alternate", True), ("", False), ("2d", False), ("2D", False), ("unspecified", False),
])
def test_a_video_whose_picture_holds_two_views_is_noted(layout, says, sample_clip_short):
    # Note [3D input]: the probed signalling decides; an Apple spatial video (its picture one
    # view) is not noted
    import dataclasses

    info = sbsconv.probe(sample_clip_short)
    tagged = dataclasses.replace(info, stereo={**info.stereo, "layout": layout})
    notes = planning.source_notes(tagged)
    assert bool(notes) == says
    if says:
        assert f"already 3D ({layout}" in notes[0] and "crop" in notes[0]
    spatial = dataclasses.replace(info, stereo={**info.stereo, "layout": "", "mv_hevc": True})
    assert planning.source_notes(spatial) == ()

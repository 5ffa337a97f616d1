"""sbsconv: 2D-to-3D video conversion for VR headsets.

    import sbsconv
    sbsconv.convert("in.mp4", "out_sbs.mp4")     # the whole conversion
    sbsconv.probe("in.mp4")                      # what a video holds
    sbsconv.ConvertOptions(divergence=2.5)       # the options, checked, for convert() & co.
    sbsconv.infill_merge("3d.mp4", "3d_inpainted.mp4", "3d_final.mp4")  # after your inpainting

Rooms: ``sbsconv.media`` (decode, encode), ``sbsconv.models`` (depth models),
``sbsconv.stereo`` (eye rendering, layouts), ``sbsconv.temporal`` (stability, scene cuts).
"""

from sbsconv import errors, media
from sbsconv._native import _core
from sbsconv.media import MediaInfo, StreamInfo, probe
from sbsconv.depthio import read_depth
from sbsconv.exporting import export_depth
from sbsconv.masks import export_mask, read_masks, write_masks
from sbsconv.viewer import write_depth_view
from sbsconv.infill import infill_merge
from sbsconv.options import ConvertOptions
from sbsconv.pointcloud import point_cloud

# Imported eagerly: a lazy first import of the submodule sbsconv.preview would rebind the
# package attribute ``preview`` from the function to the module.
from sbsconv.preview import compare, preview  # noqa: E402  (after media, which it uses)

__version__ = _core.__version__


def doctor(*args, **kwargs):
    """What this machine will run (devices, encoders and decoders tried for real, the model
    cache, convert()'s choices): see :func:`sbsconv.diagnostics.doctor`."""
    from sbsconv.diagnostics import doctor as _doctor

    return _doctor(*args, **kwargs)


def convert_many(*args, **kwargs):
    """Converts files, folders and globs into an output folder, each with convert()'s options,
    and reports what happened to each: see :func:`sbsconv.batch.convert_many`."""
    from sbsconv.batch import convert_many as _convert_many

    return _convert_many(*args, **kwargs)


def convert_split(*args, **kwargs):
    """Converts one long video as parts side by side (several devices or a Ray cluster) and
    joins them: see :func:`sbsconv.batch.convert_split`."""
    from sbsconv.batch import convert_split as _convert_split

    return _convert_split(*args, **kwargs)


def convert(*args, **kwargs):
    """Converts a 2D video into a stereoscopic 3D video: see :func:`sbsconv.conversion.convert`
    (imported on first use: it loads the model registry)."""
    from sbsconv.conversion import convert as _convert

    return _convert(*args, **kwargs)


def _attach_signature() -> None:
    # help(sbsconv.convert) and notebooks' tooltips show every option by name with its
    # default (convert() takes them as **overrides), cheaply.
    import inspect

    from sbsconv import conversion

    signature = inspect.signature(conversion.convert)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in ConvertOptions.fields()]
    convert.__signature__ = signature.replace(parameters=kept + options)
    convert.__doc__ = conversion.convert.__doc__


_attach_signature()


__all__ = ["ConvertOptions", "MediaInfo", "StreamInfo", "__version__", "compare", "convert", "convert_many", "convert_split", "doctor", "errors",
           "export_depth", "export_mask", "infill_merge", "read_masks", "write_masks", "write_depth_view", "media", "point_cloud", "preview", "probe", "read_depth"]

"""sbsconv: 2D-to-3D video conversion for VR headsets.

    import sbsconv
    sbsconv.convert("in.mp4", "out_sbs.mp4")     # the whole conversion
    sbsconv.probe("in.mp4")                      # what a video holds

Rooms: ``sbsconv.media`` (decode, encode), ``sbsconv.models`` (depth models),
``sbsconv.stereo`` (eye rendering, layouts), ``sbsconv.temporal`` (stability, scene cuts).
"""

from sbsconv import errors, media
from sbsconv._native import _core
from sbsconv.media import MediaInfo, StreamInfo, probe

__version__ = _core.__version__


def convert(*args, **kwargs):
    """See :func:`sbsconv.convert.convert` (imported lazily: it loads the model registry)."""
    from sbsconv.convert import convert as _convert

    return _convert(*args, **kwargs)


__all__ = ["MediaInfo", "StreamInfo", "__version__", "convert", "errors", "media", "probe"]

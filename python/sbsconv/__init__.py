"""sbsconv: 2D-to-3D video conversion for VR headsets.

``sbsconv.probe(path)`` describes a video; ``sbsconv.media`` reads and writes frames.
"""

from sbsconv import errors, media
from sbsconv._native import _core
from sbsconv.media import MediaInfo, StreamInfo, probe

__version__ = _core.__version__

__all__ = ["MediaInfo", "StreamInfo", "__version__", "errors", "media", "probe"]

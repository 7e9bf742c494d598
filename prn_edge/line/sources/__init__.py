"""Frame sources: GenICam cameras (harvesters), image folders, video files and a simulated conveyor."""
from .base import Frame, FrameQueue, FrameSource, Pacer
from .conveyor import SyntheticConveyor
from .files import ImageFolderSource, VideoFileSource

__all__ = ["Frame", "FrameQueue", "FrameSource", "Pacer", "SyntheticConveyor", "ImageFolderSource",
           "VideoFileSource"]

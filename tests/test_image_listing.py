"""One listing of a folder of parts (data.images.list_images) behind every command that takes one: datasets, shot
folders, `threshold`, `predict`, `bench --images` and the line's folder source take the same files, and refuse
the same twins."""
import cv2
import numpy as np
import pytest

from prn_edge.calibrate.threshold import _images as threshold_images
from prn_edge.data.images import list_images, sample_image_files
from prn_edge.errors import DataError
from prn_edge.line.errors import LineConfigError
from prn_edge.line.sources import ImageFolderSource
from prn_edge.runtime.predict import image_files


def _png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((16, 16, 3), value, np.uint8))


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "parts"
    for name in ("a.png", "b/c.jpg", "b/d.bmp"):
        _png(root / name)
    _png(root / "a_mask.png", 255)  # a mask beside its image
    _png(root / "masks" / "x.png", 255)  # a masks folder below
    _png(root / "ground_truth" / "b" / "c_mask.png", 255)
    (root / "._a.png").write_bytes(b"\x00\x05\x16\x07 mac resource fork")  # a Mac copy's hidden file
    return root


def test_every_command_takes_the_same_files(folder):
    expected = [folder / "a.png", folder / "b" / "c.jpg", folder / "b" / "d.bmp"]
    assert list_images(folder) == expected
    assert sample_image_files(folder, 10) == expected
    assert threshold_images(folder, "good") == expected
    assert image_files([folder]) == [p.resolve() for p in expected]
    with ImageFolderSource(folder, rate_hz=500) as src:
        origins = [src.grab(0.5).origin for _ in expected]
    assert origins == [str(p.relative_to(folder)) for p in expected]


def test_every_command_refuses_the_same_twins(folder):
    _png(folder / "b" / "c.png", 0)  # c.jpg's mask under the image's own name (a raw Magnetic Tile Defect folder)
    for listing in (lambda: list_images(folder), lambda: sample_image_files(folder, 10),
                    lambda: threshold_images(folder, "good"), lambda: image_files([folder])):
        with pytest.raises(DataError, match="c.jpg and c.png .* share a name"):
            listing()
    with pytest.raises(LineConfigError, match="c.jpg and c.png .* share a name"):
        ImageFolderSource(folder, rate_hz=500).open()

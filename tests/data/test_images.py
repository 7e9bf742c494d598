"""read_image / read_mask / write_* / image_header: conversions that real datasets need, and errors."""
import numpy as np
import pytest
from PIL import Image

from prn_edge.data.images import image_header, read_image, read_mask, write_image, write_mask
from prn_edge.errors import DataError

GREY = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)


@pytest.mark.parametrize("mode, data", [
    ("L", GREY),
    ("LA", np.stack([GREY, np.full_like(GREY, 7)], -1)),
    ("RGBA", np.stack([GREY, GREY, GREY, np.full_like(GREY, 3)], -1)),
    ("I;16", GREY.astype(np.uint16) * 257),
])
def test_read_image_converts_to_rgb_uint8(tmp_path, mode, data):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.fromarray(data).save(path)
    assert image_header(path)[2] == mode
    img = read_image(path)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    # every channel carries the grey values: alpha dropped, 16-bit scaled back exactly
    assert np.array_equal(img[..., 0], GREY) and np.array_equal(img[..., 2], GREY)


def test_read_image_keeps_colour_order_and_palette(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "red_p.png")
    Image.fromarray(rgb).save(tmp_path / "red.jpg", quality=100)
    for name in ("red.png", "red_p.png", "red.jpg"):
        img = read_image(tmp_path / name)
        assert img[..., 0].mean() > 190 and img[..., 1:].mean() < 10, name


def test_read_image_resizes_both_ways(tmp_path):
    Image.fromarray(GREY).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png", 32).shape == (32, 32, 3)
    assert read_image(tmp_path / "g.png", 100).shape == (100, 100, 3)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(DataError, match="broken.png"):
        image_header(tmp_path / "broken.png")


def test_a_file_cut_short_is_refused_by_name_and_a_whole_one_read(tmp_path):
    """An interrupted copy of a JPEG still decodes (OpenCV fills the rest with grey and warns on stderr)."""
    import cv2

    img = (np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "whole.jpg"), img)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "padded.jpg").write_bytes(data + b"\x00" * 16)  # some cameras pad after the end marker
    assert read_image(tmp_path / "whole.jpg").shape == (90, 70, 3)
    assert read_image(tmp_path / "padded.jpg").shape == (90, 70, 3)
    with pytest.raises(DataError, match="cut.jpg: the file is cut short"):
        read_image(tmp_path / "cut.jpg")
    cv2.imwrite(str(tmp_path / "whole.png"), img)
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:-12])  # the IEND chunk lost
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_read_mask_binarises_and_resizes_nearest(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    m[10:20, 10:30] = 1  # a mask saved as 0/1 instead of 0/255 still counts
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", (20, 20))
    assert mask.dtype == np.float32 and mask.shape == (20, 20)
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert mask.sum() == 5 * 10


def test_read_mask_ignores_alpha_channel(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2, 3, 1] = 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", (10, 10)).sum() == 1


def test_write_roundtrip_creates_folders(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    write_image(tmp_path / "a/b/img.png", rgb)
    assert np.array_equal(read_image(tmp_path / "a/b/img.png"), rgb)
    write_mask(tmp_path / "c/m.png", rgb[..., 0] > 128)
    with Image.open(tmp_path / "c/m.png") as im:
        saved = np.asarray(im)
    assert set(np.unique(saved)) <= {0, 255}
    assert np.array_equal(saved > 0, rgb[..., 0] > 128)
    assert image_header(tmp_path / "a/b/img.png") == (24, 16, "RGB")
    with pytest.raises(DataError, match="uint8"):
        write_image(tmp_path / "f.png", rgb.astype(np.float32))


def test_masks_binarize_at_half_their_own_white(tmp_path):
    import cv2

    m16 = np.zeros((8, 8), np.uint16)
    m16[2:4, 2:4] = 255  # a 0/255 mask saved in 16 bits
    cv2.imwrite(str(tmp_path / "m16.png"), m16)
    assert read_mask(tmp_path / "m16.png", (8, 8)).sum() == 4
    noisy = np.zeros((8, 8), np.uint8)
    noisy[0, :] = 3  # JPEG-like noise around black
    noisy[4:6, 4:6] = 250
    cv2.imwrite(str(tmp_path / "noisy.png"), noisy)
    assert read_mask(tmp_path / "noisy.png", (8, 8)).sum() == 4


def test_a_cut_jpeg_is_refused_before_libjpeg_prints_its_own_warning(tmp_path):
    """The user sees one clear error, not libjpeg's 'Premature end of JPEG file' on stderr before it."""
    import subprocess
    import sys

    import cv2

    img = (np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "whole.jpg"), img)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    code = ("import sys\nfrom prn_edge.data.images import read_image\nfrom prn_edge.errors import DataError\n"
            "try:\n    read_image(sys.argv[1])\nexcept DataError as e:\n    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cut.jpg")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "refused:" in r.stdout and "cut short" in r.stdout
    assert "JPEG" not in r.stderr, r.stderr

"""Frame sources without a camera: queue, pacing, the synthetic conveyor, image folders, video files, pixel
formats and line-scan assembly."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from prn_edge.line import CameraTimeout, CorruptFrame, LineConfigError, SourceExhausted
from prn_edge.line.sources import Frame, FrameQueue, ImageFolderSource, Pacer, SyntheticConveyor, VideoFileSource
from prn_edge.line.sources.pixels import SUPPORTED, to_frame
from prn_edge.line.tiles import LineScanAssembler


def frame(i: int, t: float | None = None, part_id=None, rows: int = 2) -> Frame:
    return Frame(np.full((rows, 4, 1), i, np.uint8), i, host_ts=time.monotonic() if t is None else t,
                 part_id=part_id)


def test_frame_queue_drops_oldest_when_full_and_stale_frames():
    q = FrameQueue(maxlen=2, max_age_s=0.05)
    for i in range(3):
        q.put(frame(i))
    assert q.dropped == 1 and q.get(0.01).frame_id == 1
    q.put(frame(9, t=time.monotonic() - 1.0))  # too old to be useful
    assert q.get(0.01).frame_id == 2
    with pytest.raises(CameraTimeout):
        q.get(0.02)
    assert q.dropped == 2
    newest = FrameQueue(maxlen=1)
    for i in range(5):
        newest.put(frame(i))
    assert newest.get(0.01).frame_id == 4


def test_pacer_keeps_its_schedule_when_the_consumer_is_late():
    p = Pacer(100.0)
    t0 = p.wait_next(1.0)
    time.sleep(0.035)
    ticks = [p.wait_next(1.0) for _ in range(3)]  # overdue ticks come at once with their own times
    assert np.allclose(np.diff([t0] + ticks), 0.01)
    slow = Pacer(1.0, start=time.monotonic() + 5)
    assert slow.wait_next(0.01) is None


def test_conveyor_ground_truth_faults_and_end(demo_category):
    faults = {"drop": [1], "timeout": [2], "corrupt": [3]}
    with SyntheticConveyor(demo_category, rate_hz=200, parts=6, faults=faults) as src:
        assert src.geometry() == (64, 64, 3) and src.counts_parts
        f0 = src.grab(0.5)
        assert (f0.frame_id, f0.part_id) == (0, 0) and f0.label in (0, 1) and f0.defect
        assert f0.trigger_ts <= f0.host_ts and not f0.image.flags.writeable
        with pytest.raises(CameraTimeout) as e:
            src.grab(0.5)  # part 1 dropped silently, part 2 times out
        assert (e.value.frame_id, e.value.part_expected) == (2, True)
        assert src.grab(0.5).image.shape == (32, 64, 3)  # part 3 truncated
        assert [src.grab(0.5).frame_id for _ in range(2)] == [4, 5]
        with pytest.raises(SourceExhausted) as end:
            src.grab(0.5)
        assert end.value.frame_id == 5
    labels = []
    with SyntheticConveyor(demo_category, rate_hz=1000, parts=11) as src:
        labels = [src.grab(0.5).defect for _ in range(11)]
    assert "good" in labels and len(set(labels)) >= 4  # goods and several defect types


def test_conveyor_rejects_bad_settings(demo_category):
    with pytest.raises(LineConfigError, match="rate_hz"):
        SyntheticConveyor(demo_category, rate_hz=0)
    with pytest.raises(LineConfigError, match="unknown"):
        SyntheticConveyor(demo_category, faults={"explode": [1]})


def test_image_folder_labels_from_mvtec_names_and_corrupt_files(demo_category, tmp_path):
    with ImageFolderSource(demo_category / "test", rate_hz=500) as src:
        frames = []
        while True:
            try:
                frames.append(src.grab(0.5))
            except SourceExhausted:
                break
    assert len(frames) == 11 and {f.defect for f in frames} >= {"good", "crack"}
    assert all(f.label == (f.defect != "good") for f in frames)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(LineConfigError, match="none of its images can be read"):
        ImageFolderSource(tmp_path).open()
    bad = tmp_path / "b"
    bad.mkdir()
    cv2.imwrite(str(bad / "0.png"), np.zeros((8, 8, 3), np.uint8))
    (bad / "1.png").write_bytes(b"broken")
    with ImageFolderSource(bad, rate_hz=500) as src:
        src.grab(0.5)
        with pytest.raises(CorruptFrame) as e:
            src.grab(0.5)
        assert e.value.part_expected and e.value.frame_id == 1
    with pytest.raises(LineConfigError, match="is not a folder"):
        ImageFolderSource(tmp_path / "nope").open()


def test_a_folder_of_real_images_of_many_sizes_replays_as_one_cameras_frames(tmp_path, caplog):
    """Real datasets are not one size; a camera's frames are: every image comes at the first one's size (the
    review replayed MTD cracks and 5 of 6 parts were fail-safe as corrupt frames)."""
    for i, (h, w) in enumerate([(120, 90), (200, 61), (90, 120), (33, 47)]):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((h, w), 40 * i, np.uint8))
    with ImageFolderSource(tmp_path, rate_hz=500) as src, caplog.at_level("WARNING"):
        assert src.geometry() == (120, 90, 3)
        frames = [src.grab(0.5) for _ in range(4)]
    assert [f.image.shape for f in frames] == [(120, 90, 3)] * 4
    assert [int(f.image.mean()) for f in frames] == [0, 40, 80, 120]  # each its own image, resized
    assert sum("resized to the first image's 120x90" in r.message for r in caplog.records) == 1  # said once


def test_a_replayed_folder_resizes_as_training_does_and_refuses_masks_named_like_their_images(tmp_path):
    """source.folder.size and the resize to the first image's size are training's (data.fit.fit_image); a raw
    Magnetic Tile Defect folder (name.jpg beside its mask name.png) would replay every mask as a part."""
    from prn_edge.data.fit import fit_image
    from prn_edge.data.images import read_image

    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(70, 30), (50, 90)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    with ImageFolderSource(tmp_path, rate_hz=500, size=64) as src:
        shown = [src.grab(0.5).image for _ in range(2)]
    for i, image in enumerate(shown):
        assert np.array_equal(image, fit_image(read_image(tmp_path / f"{i}.png"), (64, 64), "stretch")[0])
    with ImageFolderSource(tmp_path, rate_hz=500) as src:
        src.grab(0.5)
        assert np.array_equal(src.grab(0.5).image, fit_image(read_image(tmp_path / "1.png"), (70, 30), "stretch")[0])
    cv2.imwrite(str(tmp_path / "1.jpg"), np.zeros((50, 90), np.uint8))
    with pytest.raises(LineConfigError, match=r"1\.jpg and 1\.png .* share a name"):
        ImageFolderSource(tmp_path).open()


def test_a_conveyor_of_a_real_dataset_of_many_sizes_gives_one_cameras_frames(tmp_path, caplog):
    """BSData comes in two crop sizes: replayed as they are, every part of the other size was a fail-safe
    "corrupt frame" on the line (38 of 218 parts in a run)."""
    root = tmp_path / "parts"
    sizes = [(46, 113), (64, 154), (46, 113), (64, 154), (46, 113)]
    for i, (h, w) in enumerate(sizes):
        (root / "good").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "good" / f"{i}.png"), np.full((h, w, 3), 30 * i, np.uint8))
    (root / "defect").mkdir()
    for i, (h, w) in enumerate(sizes[:2]):  # both sizes among the test images, whatever the split; no masks
        cv2.imwrite(str(root / "defect" / f"d{i}.png"), np.zeros((h, w, 3), np.uint8))
    with SyntheticConveyor(root, rate_hz=500, parts=8, seed=0) as src, caplog.at_level("WARNING"):
        shape = src.geometry()
        frames = [src.grab(0.5) for _ in range(8)]
    assert all(f.image.shape == shape for f in frames)
    assert sum("resized to it as one camera's frames" in r.message for r in caplog.records) == 1


def test_video_file_source(tmp_path):
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, (48, 32))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPEG")
    for i in range(5):
        writer.write(np.full((32, 48, 3), (0, 0, 40 * i), np.uint8))  # BGR: red grows
    writer.release()
    with VideoFileSource(path, rate_hz=500) as src:
        assert src.geometry() == (32, 48, 3)
        frames = [src.grab(0.5) for _ in range(5)]
        with pytest.raises(SourceExhausted):
            src.grab(0.5)
    reds = [int(f.image[..., 0].mean()) for f in frames]
    assert all(abs(r - 40 * i) <= 6 for i, r in enumerate(reds)), reds  # RGB order, red channel first
    with VideoFileSource(path, rate_hz=500, loop=True) as src:
        assert len([src.grab(0.5) for _ in range(8)]) == 8
    with pytest.raises(LineConfigError, match="does not exist"):
        VideoFileSource(tmp_path / "none.avi").open()


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer mosaic of an RGB image; pattern names the 2x2 cell row by row (e.g. RGGB)."""
    idx = {"R": 0, "G": 1, "B": 2}
    out = np.zeros(rgb.shape[:2], rgb.dtype)
    for k, ch in enumerate(pattern):
        y, x = divmod(k, 2)
        out[y::2, x::2] = rgb[y::2, x::2, idx[ch]]
    return out


@pytest.mark.parametrize("fmt, pattern", [("BayerRG8", "RGGB"), ("BayerGR8", "GRBG"), ("BayerGB8", "GBRG"),
                                          ("BayerBG8", "BGGR")])
def test_bayer_formats_give_rgb(fmt, pattern):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 120, 30
    out = to_frame(mosaic(rgb, pattern).ravel(), 8, 8, fmt)
    assert out.shape == (8, 8, 3)
    assert np.abs(out[2:-2, 2:-2].astype(int) - [200, 120, 30]).max() <= 2


def test_mono_rgb_and_yuv_formats():
    h, w = 4, 6
    mono = np.arange(h * w, dtype=np.uint8)
    assert np.array_equal(to_frame(mono, w, h, "Mono8")[..., 0], mono.reshape(h, w))
    for fmt, bits in (("Mono10", 10), ("Mono12", 12), ("Mono16", 16)):
        words = (mono.astype(np.uint16) << (bits - 8))
        assert np.array_equal(to_frame(words, w, h, fmt)[..., 0], mono.reshape(h, w))  # as uint16 pixels
        assert np.array_equal(to_frame(words.view(np.uint8), w, h, fmt)[..., 0], mono.reshape(h, w))  # raw bytes
    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert np.array_equal(to_frame(rgb.ravel(), w, h, "RGB8"), rgb)
    assert np.array_equal(to_frame(rgb[..., ::-1].copy().ravel(), w, h, "BGR8"), rgb)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(to_frame(rgba.ravel(), w, h, "RGBa8"), rgb)
    grey = np.full((h, w, 3), 128, np.uint8)
    for fmt, order in (("YUV422_8", "YUYV"), ("YUV422Packed", "UYVY"), ("YUV422_8_UYVY", "UYVY")):
        packed = np.full(h * w * 2, 128, np.uint8)  # Y = U = V = 128: mid grey in every order
        assert np.abs(to_frame(packed, w, h, fmt).astype(int) - grey).max() <= 2, fmt
    assert {"Mono8", "Mono10", "Mono12", "Mono16", "BayerRG8", "RGB8", "BGR8", "YUV422_8"} <= set(SUPPORTED)


def test_pixel_errors():
    with pytest.raises(CorruptFrame, match="not supported; set the camera to one of"):
        to_frame(np.zeros(16, np.uint8), 4, 4, "Mono10Packed")
    with pytest.raises(CorruptFrame, match="incomplete transfer"):
        to_frame(np.zeros(10, np.uint8), 4, 4, "Mono8")


class Lines:
    """A stand-in line-scan camera: blocks of 2 lines, part_id from a trigger every `part_lines` lines."""

    name, counts_parts, healthy = "lines", False, True

    def __init__(self, blocks: int, part_blocks: int):
        self.blocks, self.part_blocks, self.i = blocks, part_blocks, 0

    def open(self):
        pass

    def close(self):
        pass

    def geometry(self):
        return 2, 4, 1

    def grab(self, timeout):
        if self.i >= self.blocks:
            raise SourceExhausted("end")
        f = frame(self.i, part_id=self.i // self.part_blocks)
        self.i += 1
        return f


def test_line_scan_by_length_and_by_trigger():
    with LineScanAssembler(Lines(9, 3), frame_height=5) as src:
        assert src.geometry() == (5, 4, 1)
        a, b, c = (src.grab(0.1) for _ in range(3))
        with pytest.raises(SourceExhausted):
            src.grab(0.1)
    assert [f.frame_id for f in (a, b, c)] == [0, 1, 2]
    assert a.image[:, 0, 0].tolist() == [0, 0, 1, 1, 2] and b.image[:, 0, 0].tolist() == [2, 3, 3, 4, 4]
    with LineScanAssembler(Lines(9, 3), frame_height=4, mode="trigger") as src:
        parts = [src.grab(0.1) for _ in range(3)]  # 3 blocks of 2 lines per trigger -> 6 lines resized to 4
        with pytest.raises(SourceExhausted):
            src.grab(0.1)
    assert [p.part_id for p in parts] == [0, 1, 2] and all(p.image.shape == (4, 4, 1) for p in parts)
    assert parts[1].image.min() >= 3 and parts[1].image.max() <= 5
    with pytest.raises(LineConfigError, match="mode"):
        LineScanAssembler(Lines(1, 1), 4, mode="encoder")


def test_region_resize_would_stretch_a_letterbox_model():
    from prn_edge.line.engine import EngineInput
    from prn_edge.line.tiles import Preprocessor

    lb = EngineInput(64, 64, 3, "rgb", "letterbox")
    with pytest.raises(LineConfigError, match="--input-size 100x200"):
        Preprocessor((100, 200, 3), lb, resize=True)
    assert Preprocessor((128, 128, 3), lb, resize=True).resize  # same aspect: a plain resize is the letterbox
    assert Preprocessor((100, 200, 3), EngineInput(64, 64, 3, "rgb"), resize=True).resize


def test_image_folder_frames_name_their_file_and_the_csv_row_carries_it(demo_category, tmp_path):
    """A replayed folder's decisions must say which file each verdict is for: frame ids alone do not survive a
    re-sorted or edited folder."""
    from prn_edge.line.decision import Decision, Part
    from prn_edge.line.outputs.csvlog import CsvOutput, read_decisions

    with ImageFolderSource(demo_category / "test", rate_hz=500) as src:
        frames = [src.grab(0.5) for _ in range(3)]
    files = sorted(p for p in (demo_category / "test").rglob("*.png"))
    assert [f.origin for f in frames] == [str(p.relative_to(demo_category / "test")) for p in files[:3]]
    path = tmp_path / "d.csv"
    with CsvOutput(path) as out:
        for i, f in enumerate(frames):
            p = Part(i, 0.0, 0.01, 0.02, frame=f)
            p.decision = Decision(i, "good", "model", 0.0, 0.1, 0.2)
            out.actuate(p)
    assert [r["origin"] for r in read_decisions(path)] == [f.origin for f in frames]

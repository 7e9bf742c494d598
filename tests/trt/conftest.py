import json
from pathlib import Path

import pytest

from tests.helpers.prn_artefacts import real_images


@pytest.fixture(scope="session")
def onnx_models(tiny_ckpt, tmp_path_factory) -> dict:
    """Exported tiny PRNs: dynamic-batch float input, static batch-2 uint8 BGR 96x96 frames, batch-1 float,
    and Q/DQ INT8 versions of the batch-1 model (TensorRT flavour, and the CPU flavour TensorRT refuses)."""
    import numpy as np

    from prn_edge.calibrate.quantize import quantize_qdq
    from prn_edge.export.onnx_export import export_onnx

    d = tmp_path_factory.mktemp("onnx_trt")
    out = {"dyn": d / "dyn.onnx", "u8": d / "u8.onnx", "b1": d / "b1.onnx"}
    export_onnx(tiny_ckpt, out["dyn"], batch=None)
    export_onnx(tiny_ckpt, out["u8"], batch=2, input_format="uint8", channel_order="bgr", input_hw=(96, 96))
    export_onnx(tiny_ckpt, out["b1"], batch=1)
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 3, 64, 64), dtype=np.float32) for _ in range(2)]
    out["qdq"] = d / "b1.int8.onnx"
    quantize_qdq(out["b1"], out["qdq"], "image", batches, "tensorrt")
    out["qdq_cpu"] = d / "b1.cpu-int8.onnx"
    quantize_qdq(out["b1"], out["qdq_cpu"], "image", batches, "cpu")
    return out


def make_calibration_run(root: Path, n_images: int = 6, name: str = "run1") -> Path:
    """A calibration run folder as `prn-edge calibrate` leaves it (manifest with calibration_files), with
    real-photo PNGs of various sizes."""
    import cv2

    from prn_edge.calibrate.dataset import describe_files

    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    small, large = real_images(n_images, 96), real_images(n_images, 128)
    for i in range(n_images):
        img = small[i] if i % 2 == 0 else large[i]
        p = img_dir / f"good_{i:03d}.png"
        cv2.imwrite(str(p), img[..., ::-1])  # RGB -> BGR for OpenCV
        paths.append(p)
    run = root / "calibration" / name
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run": name, "passed": True,
                                                   "calibration_files": describe_files(paths)}))
    return run


@pytest.fixture
def calib_run(tmp_path) -> Path:
    return make_calibration_run(tmp_path)

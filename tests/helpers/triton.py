"""Helpers for the Triton tests: tiny uint8 artefacts with edited metadata, and whether the real tritonserver of the
nvidia-pytriton wheel can run here (and if not, why)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

_MADE: dict = {}


def demo_category(base: Path) -> Path:
    """A 64 px demo category (4 train, 6 good and 1 defect test images), made once per session (base: its temp root)."""
    if ("category", base) not in _MADE:
        from prn_edge.data.demo import make_dataset

        root = base / "triton_demo"
        shutil.rmtree(root, ignore_errors=True)
        make_dataset(root, categories=["grass"], n_train=4, n_test_good=6, n_test_defect=1, n_shots=0, size=64,
                     progress=False)
        _MADE["category", base] = root / "grass"
    return _MADE["category", base]


def tiny_artefact(base: Path) -> Path:
    """A prn-tiny model fitted on the demo category, exported for uint8 RGB 64x64 frames; made once per session."""
    if ("onnx", base) not in _MADE:
        from prn_edge.sim.line_bench import tiny_onnx_model

        _MADE["onnx", base] = tiny_onnx_model(demo_category(base), base / "triton_onnx")
    return _MADE["onnx", base]


def edited_artefact(onnx_path: Path, out: Path, **changes) -> Path:
    """A copy of an exported ONNX with some prn_edge metadata changed (image_threshold=..., input={...} merged into
    the input spec, accuracy_gate=...)."""
    import onnx

    from prn_edge.artefact import read_metadata, write_metadata

    meta = {k: v for k, v in read_metadata(onnx_path).items() if k != "input_spec"}
    if "input" in changes:
        changes["input"] = {**meta["input"], **changes["input"]}
    model = onnx.load(str(onnx_path))
    write_metadata(model, {**meta, **changes})
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def frames_of(category: Path) -> "np.ndarray":
    """The category's test images (good and defect) as uint8 RGB frames."""
    import numpy as np

    from prn_edge.data.dataset import load_category
    from prn_edge.data.images import read_image

    return np.stack([read_image(s.image) for s in load_category(category, num_shots=0).test])


def server_skip_reason() -> Optional[str]:
    """None when the real tritonserver can serve the Python-backend model here; else why not."""
    try:
        import tritonclient.grpc  # noqa: F401
    except ImportError:
        return "tritonclient is not installed (pip install '.[triton]')"
    from prn_edge.serve.triton_server import ServerError, check_stub_numpy, find_tritonserver, stub_python_paths

    try:
        find_tritonserver()
        check_stub_numpy(stub_python_paths())
    except ServerError as e:
        return str(e)
    return None


def retrained_artefact(onnx_path: Path, out: Path, factor: float = 1.1) -> Path:
    """A copy of an exported ONNX with its largest weight tensor scaled: the same input spec and metadata, other
    maps and scores (a stand-in for a retrained model)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                  key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * np.float32(factor), weights.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out

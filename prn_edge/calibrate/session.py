"""A calibration model file run on ready model inputs, whichever runtime its format needs: an ONNX model (FP32 or
Q/DQ) through ONNX Runtime's CPU provider, an OpenVINO IR (NNCF INT8) through OpenVINO's CPU plugin. Refit and
sensitivity read named tensors of the graph (feature maps, the anomaly map), not an Engine's decisions."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

Run = Callable[[np.ndarray], list]  # model input batch -> the requested tensors, in order


def model_runner(path: Path, input_name: str, tensors: Sequence[str], threads: int = 0) -> Run:
    """A function running `path` on one input batch and returning `tensors` (graph tensor names; outputs or
    intermediate tensors, which become extra outputs). ONNX and IR keep the exported tensor names."""
    if Path(path).suffix == ".xml":
        return _openvino(Path(path), input_name, list(tensors), threads)
    return _onnxruntime(Path(path), input_name, list(tensors), threads)


def _onnxruntime(path: Path, input_name: str, tensors: list, threads: int) -> Run:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    known = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(tensors, {input_name: x})


def _openvino(path: Path, input_name: str, tensors: list, threads: int) -> Run:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    known = {n for o in model.outputs for n in o.get_names()}
    extra = [t for t in tensors if t not in known]
    if extra:
        model.add_outputs(extra)
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def run(x: np.ndarray) -> list:
        result = request.infer({input_name: x})
        return [np.array(result[t]) for t in tensors]

    return run

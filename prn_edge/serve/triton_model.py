"""Triton Python-backend model that runs a prn_edge ONNX artefact with ONNX Runtime (copied as `<version>/model.py`).

For Triton builds without the onnxruntime backend (the CPU-only server of the nvidia-pytriton wheel). Requests
the dynamic batcher hands over together run as one ONNX Runtime call. It needs numpy and onnxruntime where the
backend's stub runs, and nothing of prn_edge: the decision is the client's, from the config's parameters.

The stub's embedded interpreter ignores PYTHONPATH, so its entries are added to sys.path here: start the server
with PYTHONPATH naming the site-packages that hold numpy and onnxruntime when they are not the stub Python's own.
Mind the numpy the stub was built against: nvidia-pytriton 0.7's stub (numpy 1.x) returns outputs without data
under numpy 2, which the client reports as an EngineError.
"""
import json
import os
import sys

for _p in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.input_name = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]  # the graph's own names (anomaly_map, score)
        self.batching = int(config.get("max_batch_size", 0)) > 0
        so = ort.SessionOptions()
        threads = int(params.get("ort_threads") or 0)
        if threads:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        try:
            frames = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
            if self.batching and len(frames) > 1:  # one run for what the dynamic batcher gathered
                results = self.session.run(self.outputs, {self.input_name: np.concatenate(frames)})
                cuts = np.cumsum([len(f) for f in frames])[:-1]
                per_request = zip(*(np.split(r, cuts) for r in results))
            else:
                per_request = (self.session.run(self.outputs, {self.input_name: f}) for f in frames)
            return [pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(value))
                                                for name, value in zip(self.outputs, out)])
                    for out in per_request]
        except Exception as e:  # every request gets the error rather than the stub dying
            error = pb_utils.TritonError(f"prn_edge model: {e.__class__.__name__}: {e}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

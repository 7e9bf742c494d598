"""Serving artefacts to many cameras from one inference server: a Triton model repository written from prn_edge
artefacts (triton_repo), the Python-backend model it uses where Triton has no onnxruntime backend (triton_model),
and the tritonserver binary of the nvidia-pytriton wheel started on this host (triton_server).

The client side is an Engine like any other: prn_edge.runtime.open_engine("triton://127.0.0.1:8001/coin").
Nothing here imports tritonclient or starts a process on import.
"""

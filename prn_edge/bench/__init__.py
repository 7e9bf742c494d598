"""Throughput benchmarking of artefacts side by side (torch, ONNX Runtime FP32/INT8, TensorRT)."""

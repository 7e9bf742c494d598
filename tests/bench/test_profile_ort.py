"""tools/profile_ort.py: ONNX Runtime's node profile of an FP32 and a Q/DQ artefact, grouped by PRN stage."""
import numpy as np

from prn_edge.calibrate.quantize import float_by_design, quantize_qdq
from prn_edge.export.onnx_export import export_onnx
from tests.helpers.prn_artefacts import make_checkpoint, real_images
from tests.helpers.tools import load_tool


def test_stages_of_fp32_and_int8(tmp_path):
    tool = load_tool("profile_ort.py")
    fp32 = tmp_path / "m.onnx"
    export_onnx(make_checkpoint(tmp_path / "t.pt"), fp32)
    x = tool.model_input(fp32)
    batches = [np.stack(real_images(4, x.shape[-1])).transpose(0, 3, 1, 2)[i:i + 1].astype(np.float32) / 255
               for i in range(4)]
    quantize_qdq(fp32, tmp_path / "q.onnx", "image", batches, "cpu", "minmax", float_by_design(fp32))
    f = tool.summarize(tool.profile(fp32, x, threads=1, iters=3))
    q = tool.summarize(tool.profile(tmp_path / "q.onnx", x, threads=1, iters=3))
    assert {"encoder", "prototypes", "decoder", "tail"} <= set(f["stages_ms"])
    assert f["int8_compute_nodes"] == 0 and f["unfused_qdq_nodes"] == 0 and f["float_compute_nodes"] > 5
    assert q["int8_compute_nodes"] > 0 and q["run_ms"] > 0 and q["nodes_ms"] > 0
    assert "| encoder |" in tool.table({"fp32": f, "int8": q})
    assert tool.stage_of("/encoder/Sub", "Sub") == "normalize" and tool.stage_of("/msa.1/MatMul", "MatMul") == "msa"
    assert tool.stage_of("x_QuantizeLinear", "QuantizeLinear") == "unfused Q/DQ"

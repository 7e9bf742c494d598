"""The third calibration flavour: NNCF INT8 as an OpenVINO IR, through the same run, gate, fallback and refit."""
import json

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from prn_edge.artefact import read_ir_metadata, read_metadata  # noqa: E402
from prn_edge.calibrate.run import CalibrationOptions, calibrate  # noqa: E402
from prn_edge.errors import ConfigError  # noqa: E402

# Everything but the last two encoder stages stays float in the gate tests: each layer group the fallback ranks
# costs one NNCF quantization (~20 s here), and two groups show the mechanism.
MOST = ("/encoder/stages.0", "/encoder/stages.1", "/msa.", "/fusion/", "/decoder/", "/inputs.", "/Concat")


def _test_frames(data, spec):
    from prn_edge.data.images import read_image
    from prn_edge.runtime.preprocess import rgb_to_frames

    paths = sorted(p for p in (data / "test").rglob("*.png"))
    return rgb_to_frames([read_image(p) for p in paths], spec)


def test_openvino_run_writes_a_gated_ir_that_bench_and_engines_open(trained, tmp_path):
    from prn_edge.cli import main
    from prn_edge.runtime import open_engine
    from prn_edge.verify import compare

    ckpt, data = trained
    report = calibrate(ckpt, data, "ov", root=tmp_path, log=lambda m: None,
                       options=CalibrationOptions(flavour="openvino", size=8, max_attempts=1, keep_float=MOST[2:]))
    run = tmp_path / "ov"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["options"]["flavour"] == "openvino"
    assert manifest["artefacts"] == {"fp32": "model.fp32.onnx", "int8": "model.int8.xml",
                                     "int8_weights": "model.int8.bin", "int8_runtime": "openvino"}
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json", "model.fp32.onnx", "model.int8.bin",
                                                     "model.int8.xml", "report.md"]
    q = manifest["attempts"][0]["quantization"]
    assert q["flavour"] == "openvino" and q["tool"].startswith("nncf ") and q["fake_quantize_nodes"] > 0
    assert q["subset_size"] == 8 and q["ignored_openvino_ops"] >= q["float_by_design"] - len(
        q["excluded_without_openvino_op"])
    assert len(q["prototypes_refit"]["scales"]) >= 1  # refitted on the IR's own features
    speed = manifest["speed_here"]
    assert speed["fp32_ms"] > 0 and speed["int8_ms"] > 0
    # the IR carries its own thresholds and the gate's verdict, like a Q/DQ ONNX does
    meta = read_ir_metadata(run / "model.int8.xml")
    chosen = manifest["attempts"][0]["metrics"]["int8_decision"]
    assert meta["image_threshold"] == pytest.approx(chosen["image_threshold"])
    assert meta["accuracy_gate"] == ("passed" if report["passed"] else "failed") and meta["calibration_run"] == "ov"
    assert meta["precision"] == "int8 (NNCF)" and meta["input"] == read_metadata(run / "model.fp32.onnx")["input"]
    # the line's engine and the benchmark open it through the openvino backend
    spec = read_metadata(run / "model.fp32.onnx")["input_spec"]
    frames = _test_frames(data, spec)
    with open_engine(run / "model.fp32.onnx") as ref, \
            open_engine(run / "model.int8.xml", allow_failed_gate=True) as eng:
        assert eng.backend == "openvino"
        fp32, int8 = ref.infer(frames), eng.infer(frames)
    c = compare(fp32, int8)
    assert c["map_correlation"] > 0.5  # the same model (a 30-step tiny PRN: INT8 moves its weak maps a lot)
    if report["passed"]:  # what the gate asked of validation decisions holds on the test images
        assert c["decision_agreement"] >= manifest["options"]["min_decision_agreement"]
    args = ["bench", str(run / "model.fp32.onnx"), str(run / "model.int8.xml"), "--iters", "2", "--rounds", "1",
            "--quiet", "--allow-failed-gate"]
    assert main(args) == 0
    # tools/int8_agreement.py reports the same comparison over the whole test set, OpenVINO FP32 beside it
    from tests.helpers.tools import load_tool

    agree = load_tool("int8_agreement.py").agreement(run, data, threads=1)
    assert agree["int8"]["decision_agreement"] == pytest.approx(c["decision_agreement"])
    assert agree["int8"]["backend"] == "openvino" and agree["ov-fp32"]["decision_agreement"] == 1.0
    # and the cascade of the IR with its FP32 model, at the margin the run recorded in the IR
    cascade = agree["cascade"]
    assert cascade["backend"] == "cascade" and 0 <= cascade["reference_runs"] <= 1
    assert cascade["margin"] == read_ir_metadata(run / "model.int8.xml")["cascade_margin"]
    assert cascade["decision_agreement"] >= agree["int8"]["decision_agreement"]  # its FP32 part agrees by design
    ort = agree["cascade-ort"]  # the FP32 part on ONNX Runtime: the same parts go to it
    assert ort["reference_runs"] == cascade["reference_runs"] and ort["decision_agreement"] >= 0.9
    # an IR's reference runs on OpenVINO unless told (one runtime for both parts, and faster than ONNX Runtime)
    for asked, runs_on in (({}, "openvino"), ({"reference_backend": "onnxruntime"}, "onnxruntime")):
        engine = open_engine(run / "model.int8.xml", backend="cascade", allow_failed_gate=True, **asked)
        assert engine.reference.backend == runs_on and engine.fast.backend == "openvino"


def test_a_failed_openvino_gate_keeps_the_top_groups_in_float_through_the_ignored_scope(trained, tmp_path):
    ckpt, data = trained
    opts = CalibrationOptions(flavour="openvino", size=8, max_attempts=2, min_decision_agreement=1.01,
                              keep_float=MOST, refit_prototypes=False)
    report = calibrate(ckpt, data, "strict", root=tmp_path, options=opts, log=lambda m: None)
    assert not report["passed"] and len(report["attempts"]) == 2
    ranking = report["sensitivity"]
    assert [r["group"] for r in ranking] and {r["group"] for r in ranking} <= {"encoder/stages.2", "encoder/stages.3"}
    first, second = (a["quantization"] for a in report["attempts"])
    assert len(report["attempts"][1]["excluded"]) == ranking[0]["nodes"]
    assert second["ignored_openvino_ops"] > first["ignored_openvino_ops"]
    assert second["fake_quantize_nodes"] < first["fake_quantize_nodes"]
    assert read_ir_metadata(tmp_path / "strict" / "model.int8.xml")["accuracy_gate"] == "failed"


def test_ignored_nodes_get_no_fake_quantize(trained, tmp_path):
    import onnx
    import openvino as ov

    from prn_edge.calibrate.nncf_quantize import ignored_names, quantize_nncf
    from prn_edge.calibrate.quantize import float_by_design
    from prn_edge.export.onnx_export import export_onnx

    ckpt, _ = trained
    fp32 = tmp_path / "m.onnx"
    export_onnx(ckpt, fp32)
    spec = read_metadata(fp32)["input_spec"]
    g = onnx.load(str(fp32)).graph
    convs = [n.name for n in g.node if n.op_type == "Conv" and n.name.startswith("/encoder/stages.3")]
    assert convs
    batches = [np.random.default_rng(i).random((1, 3, *spec.model_hw), dtype=np.float32) for i in range(4)]
    quantize_nncf(fp32, tmp_path / "q.xml", spec.name, batches, float_by_design(fp32) + convs)
    model = ov.Core().read_model(str(tmp_path / "q.xml"))
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    names, unmatched = ignored_names(ov.convert_model(str(fp32)), g, convs)
    assert not unmatched and any(n.endswith("/WithoutBiases") for n in names)
    for n in names:
        feeds = {i.get_source_output().get_node().get_type_name() for i in ops[n].inputs()}
        assert "FakeQuantize" not in feeds, n
    others = [op for name, op in ops.items() if op.get_type_name() == "Convolution" and name not in names]
    assert any("FakeQuantize" in {i.get_source_output().get_node().get_type_name() for i in op.inputs()}
               for op in others)


@pytest.mark.parametrize("kw, match", [({"method": "entropy"}, "NNCF"), ({"sensitivity": "sqnr"}, "groups")])
def test_openvino_flavour_refuses_what_only_onnx_runtime_does(kw, match):
    with pytest.raises(ConfigError, match=match):
        CalibrationOptions(flavour="openvino", **kw).validate()


def test_nncf_settings_reach_nncf_and_the_manifest(trained, tmp_path, monkeypatch):
    import nncf

    from prn_edge.calibrate.nncf_quantize import NNCFSettings, quantize_nncf
    from prn_edge.export.onnx_export import export_onnx

    ckpt, _ = trained
    fp32 = tmp_path / "m.onnx"
    export_onnx(ckpt, fp32)
    spec = read_metadata(fp32)["input_spec"]
    batches = [np.random.default_rng(i).random((1, 3, *spec.model_hw), dtype=np.float32) for i in range(2)]
    seen, real = [], nncf.quantize
    monkeypatch.setattr(nncf, "quantize", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    info = quantize_nncf(fp32, tmp_path / "d.xml", spec.name, batches)
    assert seen[-1]["fast_bias_correction"] is True and "model_type" not in seen[-1]  # NNCF's defaults
    assert info["fast_bias_correction"] is True and info["smooth_quant_alpha"] is None
    info = quantize_nncf(fp32, tmp_path / "s.xml", spec.name, batches,
                         settings=NNCFSettings(fast_bias_correction=False, smooth_quant_alpha=0.8))
    kw = seen[-1]
    assert kw["fast_bias_correction"] is False and kw["model_type"] == nncf.ModelType.TRANSFORMER
    assert kw["advanced_parameters"].smooth_quant_alphas.matmul == 0.8
    assert kw["preset"] == nncf.QuantizationPreset.PERFORMANCE  # not the transformer default (mixed)
    assert info["fast_bias_correction"] is False and info["smooth_quant_alpha"] == 0.8


def test_nncf_settings_are_refused_where_they_do_nothing():
    from prn_edge.calibrate.nncf_quantize import NNCFSettings

    with pytest.raises(ConfigError, match="--nncf-.*openvino"):
        CalibrationOptions(flavour="cpu", nncf=NNCFSettings(fast_bias_correction=False)).validate()
    with pytest.raises(ConfigError, match="within"):
        CalibrationOptions(flavour="openvino", nncf=NNCFSettings(smooth_quant_alpha=1.5)).validate()

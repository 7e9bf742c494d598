"""The artefact layer: the metadata codec, the versioned manifests, the one decision rule, the keep-in-float
record of a real exported model, Jetson detection, and that the layer stays at the bottom."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from prn_edge.artefact import (CALIBRATION_RUN, ENGINE, MANIFEST_VERSION, InputSpec, ManifestError, MetadataError,
                               build_metadata, decide, decode_metadata, encode_metadata, make_engine_manifest,
                               metadata_props, normalize_scores, read_calibration_manifest, read_engine_manifest,
                               read_keep_float, read_manifest, read_metadata, write_manifest, write_metadata)
from prn_edge.artefact import host
from prn_edge.artefact.keep_float import KEY, legacy_keep_float

SPEC = InputSpec(name="frames", format="uint8", layout="NHWC", batch=None, height=100, width=90, channels=1,
                 channel_order="mono", model_height=64, model_width=64, resize="bilinear", scale=1 / 255,
                 value_range=(0.0, 255.0), fit="letterbox")


def _meta(**ckpt):
    ckpt = {"image_threshold": 0.4, "pixel_threshold": None, "score_spread": 0.2, "category": "c", **ckpt}
    return build_metadata(toolkit_version="0.0.1", variant="prn-tiny", ckpt_meta=ckpt, input_spec=SPEC,
                          model={"k": 3}, checkpoint_sha256=None, opset=17, exporter="test")


# ---------------------------------------------------------------------------------------------- metadata codec
def test_codec_round_trip_keeps_the_key_names_and_formats():
    props = encode_metadata(_meta())
    # the keys and string formats existing artefacts carry
    assert props["prn_edge.kind"] == "prn_edge.onnx" and props["prn_edge.format_version"] == "1"
    assert props["prn_edge.image_threshold"] == "0.4" and props["prn_edge.pixel_threshold"] == "null"
    assert props["prn_edge.variant"] == "prn-tiny" and json.loads(props["prn_edge.input"])["fit"] == "letterbox"
    # a square model input keeps format 1's one model_size, so every earlier prn_edge reads the artefact
    assert json.loads(props["prn_edge.input"])["model_size"] == 64 and "model_height" not in props["prn_edge.input"]
    assert props["prn_edge.decision"] == "anomalous = score >= image_threshold"
    meta = decode_metadata(props, "m.onnx")
    assert meta["input_spec"] == SPEC and meta["image_threshold"] == 0.4 and meta["pixel_threshold"] is None
    assert meta["opset"] == 17 and meta["checkpoint_sha256"] == ""
    assert encode_metadata({k: v for k, v in meta.items() if k != "input_spec"}) == props
    with pytest.raises(MetadataError, match=r"m\.onnx carries no prn_edge metadata"):
        decode_metadata({"prn_edge.variant": "x"}, "m.onnx")
    with pytest.raises(MetadataError, match="not valid JSON"):
        decode_metadata({**props, "prn_edge.input": "{"}, "m.onnx")
    with pytest.raises(MetadataError, match="no image_threshold"):
        decode_metadata(encode_metadata(_meta(image_threshold=None)), "m.onnx")


def test_codec_writes_into_an_onnx_model_and_reads_it_back(exported, tmp_path):
    model = onnx.load(str(exported))
    before = metadata_props(model)
    write_metadata(model, {"image_threshold": 0.25, "calibration_run": "r1"})
    out = tmp_path / "retuned.onnx"
    onnx.save(model, str(out))
    meta = read_metadata(out)
    assert meta["image_threshold"] == 0.25 and meta["calibration_run"] == "r1"
    assert meta["input"] == json.loads(before["prn_edge.input"]) and meta["input_spec"].model_hw == (64, 64)
    assert {k: v for k, v in metadata_props(model).items() if k not in ("prn_edge.image_threshold",
                                                                        "prn_edge.calibration_run")} == \
        {k: v for k, v in before.items() if k != "prn_edge.image_threshold"}


def test_a_non_square_model_input_is_format_2_and_square_ones_stay_format_1():
    wide = dataclasses.replace(SPEC, model_height=64, model_width=128)
    props = encode_metadata(build_metadata(toolkit_version="0.0.1", variant="prn-tiny",
                                           ckpt_meta={"image_threshold": 0.4, "score_spread": 0.2},
                                           input_spec=wide, model={}, checkpoint_sha256=None, opset=17,
                                           exporter="test"))
    record = json.loads(props["prn_edge.input"])
    assert props["prn_edge.format_version"] == "2" and (record["model_height"], record["model_width"]) == (64, 128)
    assert "model_size" not in record
    meta = decode_metadata(props, "wide.onnx")
    assert meta["input_spec"] == wide and meta["input_spec"].model_hw == (64, 128)
    assert wide.placement().dst_hw == (64, 128)
    # what an artefact of an earlier prn_edge carries reads as a square model input
    old = encode_metadata(_meta())
    assert decode_metadata(old, "old.onnx")["input_spec"].model_hw == (64, 64)
    with pytest.raises(MetadataError, match=r"future\.onnx has prn_edge artefact format 4, this prn_edge reads "
                                            r"formats 1, 2, 3"):
        decode_metadata({**props, "prn_edge.format_version": "4"}, "future.onnx")
    # a tiles model (square or not) is format 3: an earlier line would resize whole regions into it
    tiles = encode_metadata(build_metadata(toolkit_version="0.0.1", variant="prn-tiny",
                                           ckpt_meta={"image_threshold": 0.4, "score_spread": 0.2},
                                           input_spec=dataclasses.replace(SPEC, fit="tiles"), model={},
                                           checkpoint_sha256=None, opset=17, exporter="test"))
    assert tiles["prn_edge.format_version"] == "3" and decode_metadata(tiles, "t.onnx")["input_spec"].fit == "tiles"
    sizeless = {k: v for k, v in record.items() if not k.startswith("model_")}
    with pytest.raises(MetadataError, match=r"odd\.onnx: its input spec has no \['model_height', 'model_width'\]"):
        decode_metadata({**props, "prn_edge.input": json.dumps(sizeless)}, "odd.onnx")


# ---------------------------------------------------------------------------------------------- manifests
def test_manifests_carry_a_version_and_a_newer_one_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    manifest = make_engine_manifest(tensorrt_version="10.3.0", compute_capability="8.7", gpu_name="Fake Orin",
                                    onnx_metadata={"prn_edge.kind": "prn_edge.onnx"}, onnx_sha256="a" * 64,
                                    engine_sha256="b" * 64, max_batch=np.int64(8))
    assert manifest["manifest_version"] == MANIFEST_VERSION == 1
    assert manifest["kind"] == "prn_edge.tensorrt_engine" and manifest["format_version"] == 1
    write_manifest(tmp_path / "m.json", manifest)
    manifest = read_engine_manifest(engine)
    assert manifest["max_batch"] == 8  # numpy values are written as numbers
    newer = dict(manifest, manifest_version=MANIFEST_VERSION + 1, toolkit_version="9.0")
    (tmp_path / "m.json").write_text(json.dumps(newer))
    with pytest.raises(ManifestError, match=r"manifest version 2, newer than this prn_edge reads.*toolkit 9\.0.*"
                                            r"Upgrade prn_edge here, or rebuild the engine"):
        read_engine_manifest(engine)
    (tmp_path / "m.json").write_text(json.dumps(dict(manifest, manifest_version="1")))
    with pytest.raises(ManifestError, match="not a version number"):
        read_engine_manifest(engine)
    # the runtime and the build say the same in their own errors
    from prn_edge.trt.calibrator import read_calibration_run
    from prn_edge.errors import BuildError
    from prn_edge.runtime import EngineError
    from prn_edge.trt import runner

    (tmp_path / "m.json").write_text(json.dumps(newer))
    with pytest.raises(EngineError, match="newer than this prn_edge reads"):
        runner.read_manifest(engine)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"calibration_files": [], "manifest_version": 3}))
    with pytest.raises(BuildError, match=r"manifest version 3, newer.*run the calibration again"):
        read_calibration_run(run)


def test_manifests_written_before_the_version_field_still_read(tmp_path):
    """Manifests without manifest_version are version 1: the files of earlier prn_edge load unchanged."""
    old_engine = {"kind": "prn_edge.tensorrt_engine", "format_version": 1, "tensorrt_version": "8.5.2",
                  "compute_capability": "8.7", "metadata": {}}
    (tmp_path / "old.json").write_text(json.dumps(old_engine))
    assert read_manifest(tmp_path / "old.json", ENGINE) == old_engine
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run": "run", "passed": True, "calibration_files": []}))
    assert read_calibration_manifest(run)["passed"] is True
    (run / "manifest.json").write_text(json.dumps({"run": "run"}))
    with pytest.raises(ManifestError, match="lists no calibration_files.*prn-edge calibrate"):
        read_manifest(run / "manifest.json", CALIBRATION_RUN)
    with pytest.raises(ManifestError, match="is not a calibration run"):
        read_calibration_manifest(tmp_path / "nothing")
    (tmp_path / "old.json").write_text(json.dumps(dict(old_engine, format_version=2)))
    with pytest.raises(ManifestError, match="manifest format 2"):
        read_manifest(tmp_path / "old.json", ENGINE)


# ---------------------------------------------------------------------------------------------- decision
def test_normalize_and_decide():
    meta = {"image_threshold": 0.4, "score_spread": 0.2}
    s = np.array([0.0, 0.3, 0.4, 0.5, 0.9], np.float32)
    n = normalize_scores(s, meta)
    assert n.dtype == np.float32 and np.allclose(n, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert normalize_scores([0.35], meta)[0] == pytest.approx(0.25)
    assert decide(s, meta).tolist() == [False, False, True, True, True]  # the threshold itself is anomalous
    # compared in float64: a float32 score just below a threshold that float32 cannot hold stays good
    thr = 0.1
    below = np.nextafter(np.float32(thr), np.float32(0))
    assert not decide(np.array([below], np.float32), {"image_threshold": thr})[0]


def test_the_line_test_double_decides_with_the_same_rule():
    from prn_edge.sim.doubles import ScriptedEngine

    scores = [0.1, 0.45, 0.5, 0.77]
    eng = ScriptedEngine(4, 4, score_fn=lambda f: scores[int(f[0, 0, 0])], threshold=0.5, spread=0.3)
    frames = np.zeros((4, 4, 4, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(4)
    with eng:  # the double is an Engine: used inside its activation like every backend
        r = eng.infer(frames)
    assert np.array_equal(r.normalized_scores, normalize_scores(r.scores, eng.metadata))
    assert np.array_equal(r.decisions, decide(r.scores, eng.metadata)) and r.decisions.tolist() == [0, 0, 1, 1]


# ---------------------------------------------------------------------------------------------- keep in float
def test_keep_float_list_of_a_real_exported_model(exported, tmp_path):
    from prn_edge.trt.mixed_precision import fp32_nodes
    from prn_edge.calibrate.quantize import float_by_design, prepare

    model = onnx.load(str(exported))
    names = [n.name for n in model.graph.node]
    assert KEY in metadata_props(model)  # written at export
    record = read_keep_float(model)
    assert record.prototypes == ("/prototypes.0/", "/prototypes.1/", "/prototypes.2/")
    assert record.distance == ("/distance/",)  # the tiny model fuses the prototype distance into its map
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert record.tail[0] == convs[-1] == "/decoder/out/Conv" and record.tail == tuple(names[names.index(convs[-1]):])
    # the fused map (the default "logit": the decoder's and the distance's calibrated logits, averaged) and its score
    assert {"/Sigmoid", "/TopK", "/ReduceMean", "/distance/Sub"} <= set(record.tail)
    assert any(n.startswith("/distance/Div") for n in record.tail)  # the distance's calibration (v - loc) / temp
    assert all(any(s in n for s in record.scopes) for n in record.search) and "/prototypes.1/MatMul" in record.search
    assert not any(n.startswith("/encoder/") for n in record.nodes)
    # on the graph as exported, the record is the rule artefacts without one get
    assert set(legacy_keep_float(model.graph.node).nodes) == set(record.nodes)
    # TensorRT layers made of a kept node carry its scope
    assert record.covers("/prototypes.0/ArgMin_reduce") and not record.covers("/encoder/stem/Conv")

    # calibration reads the export-time list even after ONNX Runtime's pre-processing re-sorted the graph
    prepared = prepare(exported, tmp_path / "prepared.onnx")
    assert set(float_by_design(prepared)) == set(record.nodes)
    resorted = onnx.load(str(prepared))
    moved = set(record.nodes) - set(legacy_keep_float(resorted.graph.node).nodes)
    assert moved and all(n.startswith("/distance/") for n in moved)  # what the positional rule alone would lose
    assert set(record.nodes) <= fp32_nodes(model)

    # an artefact without the record falls back to the rule; a record naming missing nodes is refused
    old = onnx.load(str(exported))
    keep = [p for p in old.metadata_props if p.key != KEY]
    del old.metadata_props[:]
    old.metadata_props.extend(keep)
    assert read_keep_float(old) == legacy_keep_float(old.graph.node)
    edited = onnx.load(str(exported))
    next(n for n in edited.graph.node if n.name == "/TopK").name = "/renamed"
    with pytest.raises(MetadataError, match=r"names nodes the graph does not have \(\['/TopK'\]\)"):
        read_keep_float(edited)


# ---------------------------------------------------------------------------------------------- host, layering
def test_jetson_detection(tmp_path, monkeypatch):
    from prn_edge.bench.machine import machine_info

    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", tmp_path / "none")
    assert host.jetson_info() == {"l4t": None, "l4t_release": None, "jetpack": None}
    assert host.jetson_info(probe=True)["power_mode"] is None and machine_info()["jetson"] is None
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n")
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", release)
    monkeypatch.setattr(host, "DPKG_STATUS", tmp_path / "no_status")
    info = machine_info()["jetson"]
    assert info["l4t"] == "36.4.3" and info["l4t_release"].startswith("# R36") and "clocks" in info


def test_the_artefact_layer_imports_nothing_above_it():
    code = ("import sys, prn_edge.artefact\n"
            "print(sorted(m for m in sys.modules if m.startswith('prn_edge') or m in "
            "('torch', 'onnx', 'onnxruntime', 'cv2', 'tensorrt')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = eval(out.stdout)
    assert all(m.startswith("prn_edge.artefact") or m in ("prn_edge", "prn_edge.errors", "prn_edge.input_policy")
               for m in loaded), loaded


def test_the_wire_reader_sees_what_onnx_sees(exported):
    """The metadata reader parses the protobuf itself (no onnx on the appliance): same properties as onnx."""
    import onnx

    from prn_edge.artefact.onnx_header import WireError, read_header

    props, external, has_graph = read_header(exported.read_bytes())
    assert has_graph and external == []
    assert props == {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    from prn_edge.artefact.onnx_header import op_types

    assert op_types(exported.read_bytes()) == {n.op_type for n in onnx.load(str(exported)).graph.node}
    with pytest.raises(WireError):
        read_header(exported.read_bytes()[:len(exported.read_bytes()) // 2])


def test_metadata_rewritten_on_the_wire_is_what_onnx_would_write(exported, tmp_path):
    import onnx

    from prn_edge.artefact import read_metadata
    from prn_edge.artefact.metadata import with_metadata, write_metadata

    data = exported.read_bytes()
    new = with_metadata(data, {"image_threshold": 0.123})
    model = onnx.load(str(exported))
    write_metadata(model, {"image_threshold": 0.123})
    ours = onnx.load_from_string(new)
    assert [(p.key, p.value) for p in ours.metadata_props] == [(p.key, p.value) for p in model.metadata_props]
    assert ours.graph == model.graph  # everything else byte for byte
    (tmp_path / "t.onnx").write_bytes(new)
    assert read_metadata(tmp_path / "t.onnx")["image_threshold"] == 0.123

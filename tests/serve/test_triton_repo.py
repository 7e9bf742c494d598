"""`prn-edge triton-repo`: the model repository written from artefacts. Every config written here is parsed against
Triton's ModelConfig schema (tritonclient's model_config_pb2); the decision parameters in it and in the sidecar
decode to the artefact's own metadata."""
from __future__ import annotations

import json

import pytest

from prn_edge.artefact import decode_metadata, make_engine_manifest, metadata_props, read_metadata, sha256_file
from prn_edge.artefact.triton import read_sidecar, sidecar_parameters
from prn_edge.cli import main
from prn_edge.serve.triton_repo import (ParityCheck, RepositoryError, ServeOptions, config_text, describe,
                                        parse_config, write_model)
from prn_edge.verify import check_rollout
from tests.helpers.triton import demo_category, edited_artefact, retrained_artefact, tiny_artefact

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed (pip install '.[triton]'): "
    "the configs cannot be checked against Triton's ModelConfig schema")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_artefact(tmp_path_factory.getbasetemp())


def parsed(model_dir):
    config = parse_config((model_dir / "config.pbtxt").read_text(), str(model_dir))
    assert config is not None
    return config


def params_of(config) -> dict:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_onnxruntime_model(tmp_path, tiny):
    summary = write_model([tiny], tmp_path / "repo", name="coin")
    model_dir = tmp_path / "repo" / "coin"
    assert summary["config_validated"] and summary["versions"] == [1] and summary["backend"] == "onnxruntime"
    assert (model_dir / "1" / "model.onnx").read_bytes() == tiny.read_bytes()
    c = parsed(model_dir)
    assert (c.name, c.backend, c.max_batch_size) == ("coin", "onnxruntime", 8)
    assert c.version_policy.latest.num_versions == 1
    (inp,) = c.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("frames", model_config_pb2.TYPE_UINT8, [64, 64, 3])
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NHWC
    outs = {o.name: o for o in c.output}
    assert list(outs["anomaly_map"].dims) == [1, 64, 64] and outs["anomaly_map"].data_type == model_config_pb2.TYPE_FP32
    assert list(outs["score"].dims) == [1] and list(outs["score"].reshape.shape) == []
    assert c.HasField("dynamic_batching") and c.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in c.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    # the decision parameters decode to the artefact's own metadata, plus where they came from
    params = params_of(c)
    meta, own = decode_metadata(params, "config"), read_metadata(tiny)
    for key in ("image_threshold", "score_spread", "input_spec", "train_images_sha256", "prototypes_sha256",
                "checkpoint_sha256"):
        assert meta[key] == own[key], key
    assert (meta["model_version"], meta["artefact"], meta["artefact_sha256"]) == ("1", "tiny.onnx", sha256_file(tiny))
    assert sidecar_parameters(read_sidecar(model_dir), 1, "sidecar") == params


def test_python_backend_model(tmp_path, tiny):
    write_model([tiny], tmp_path / "repo", name="coin", python_backend=True,
                options={"max_batch": 4, "preferred_batch": [2, 4], "instances": 2, "ort_threads": 1})
    model_dir = tmp_path / "repo" / "coin"
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx", "model.py"]
    assert "class TritonPythonModel" in (model_dir / "1" / "model.py").read_text()
    c = parsed(model_dir)
    assert (c.backend, c.max_batch_size, list(c.dynamic_batching.preferred_batch_size)) == ("python", 4, [2, 4])
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert params_of(c)["ort_threads"] == "1"


def fake_engine(tmp_path, onnx_path, max_batch=4, **manifest):
    """A built engine as the repository writer sees it: bytes, and the manifest `prn-edge build` writes beside it."""
    import onnx

    engine = tmp_path / "coin.engine"
    engine.write_bytes(b"not a real plan: the writer copies it, Triton's tensorrt backend would load it")
    props = metadata_props(onnx.load(str(onnx_path), load_external_data=False))
    m = make_engine_manifest(tensorrt_version="10.3.0", compute_capability="8.7", gpu_name="Orin",
                             onnx_metadata=props, onnx_sha256=sha256_file(onnx_path),
                             engine_sha256=sha256_file(engine), precision="fp16", max_batch=max_batch,
                             outputs={"anomaly_map": [-1, 1, 64, 64], "score": [-1]}, **manifest)
    engine.with_suffix(".json").write_text(json.dumps(m))
    return engine


def test_tensorrt_model_from_engine_and_manifest(tmp_path, tiny):
    engine = fake_engine(tmp_path, tiny, max_batch=4)
    summary = write_model([engine], tmp_path / "repo", name="coin_trt")
    model_dir = tmp_path / "repo" / "coin_trt"
    assert (model_dir / "1" / "model.plan").read_bytes() == engine.read_bytes()
    c = parsed(model_dir)
    assert (c.backend, c.max_batch_size) == ("tensorrt", 4)  # the engine's profile ends at 4: the default 8 is capped
    assert summary["options"]["max_batch"] == 4
    params = params_of(c)
    assert (params["prn_edge.tensorrt_version"], params["prn_edge.precision"]) == ("10.3.0", "fp16")
    assert params["prn_edge.onnx_sha256"] == sha256_file(tiny)
    assert decode_metadata(params, "c")["image_threshold"] == read_metadata(tiny)["image_threshold"]
    with pytest.raises(RepositoryError, match="built for batches up to 4"):
        write_model([engine], tmp_path / "other", options={"max_batch": 16})
    with pytest.raises(RepositoryError, match="runs on a GPU only"):
        write_model([engine], tmp_path / "other", options={"instance_kind": "cpu"})
    with pytest.raises(RepositoryError, match="give the .onnx the engine was built from"):
        write_model([engine], tmp_path / "other", python_backend=True)


def test_static_batch_artefact(tmp_path, tiny):
    static = edited_artefact(tiny, tmp_path / "static.onnx", input={"batch": 2})
    write_model([static], tmp_path / "repo", name="coin")
    c = parsed(tmp_path / "repo" / "coin")
    assert c.max_batch_size == 0 and not c.HasField("dynamic_batching")
    assert list(c.input[0].dims) == [2, 64, 64, 3]
    assert {o.name: list(o.dims) for o in c.output} == {"anomaly_map": [2, 1, 64, 64], "score": [2]}


def test_a_non_square_model_input_sets_the_map_dims(tmp_path):
    from prn_edge.sim.line_bench import tiny_onnx_model
    from tests.helpers.triton import demo_category

    wide = tiny_onnx_model(demo_category(tmp_path), tmp_path / "wide", overrides={"model": {"image_size": [64, 128]}})
    write_model([wide], tmp_path / "repo", name="strip")
    c = parsed(tmp_path / "repo" / "strip")
    assert list(c.input[0].dims) == [64, 64, 3]  # camera frames of the category's size, stretched in the graph
    assert {o.name: list(o.dims) for o in c.output} == {"anomaly_map": [1, 64, 128], "score": [1]}
    meta = decode_metadata(params_of(c), "config")
    assert meta["format_version"] == 2 and meta["input_spec"].model_hw == (64, 128)
    assert read_sidecar(tmp_path / "repo" / "strip")["map_dims"] == [1, 64, 128]


def test_add_writes_the_next_version_and_keeps_the_options(tmp_path, tiny):
    repo = tmp_path / "repo"
    write_model([tiny], repo, name="coin", options={"max_batch": 4, "max_queue_delay_us": 500})
    retuned = edited_artefact(tiny, tmp_path / "retuned.onnx", image_threshold=0.25)
    with pytest.raises(RepositoryError, match="already holds a model; --add"):
        write_model([retuned], repo, name="coin")
    summary = write_model([retuned], repo, name="coin", add=True)
    assert (summary["versions_written"], summary["versions"], summary["served"]) == ([2], [1, 2], 2)
    c = parsed(repo / "coin")
    assert (c.max_batch_size, c.dynamic_batching.max_queue_delay_microseconds) == (4, 500)  # kept from version 1
    params = params_of(c)
    assert (params["prn_edge.model_version"], params["prn_edge.image_threshold"]) == ("2", "0.25")
    sidecar = read_sidecar(repo / "coin")
    v1 = sidecar_parameters(sidecar, 1, "s")
    assert v1["prn_edge.image_threshold"] == str(read_metadata(tiny)["image_threshold"])
    assert sidecar_parameters(sidecar, 2, "s") == params
    # versions of one model share a config: same backend and input
    with pytest.raises(RepositoryError, match="uses onnxruntime"):
        write_model([tiny], repo, name="coin", add=True, python_backend=True)
    other = edited_artefact(tiny, tmp_path / "mono.onnx", input={"channels": 1, "channel_order": "mono"})
    with pytest.raises(RepositoryError, match="a different input is a different model"):
        write_model([other], repo, name="coin", add=True)
    assert read_sidecar(repo / "coin")["versions"].keys() == {"1", "2"}  # nothing written by the refusals
    assert sorted(p.name for p in (repo / "coin").iterdir()) == ["1", "2", "config.pbtxt", "prn_edge.json"]


@pytest.fixture(scope="module")
def parity_folder(tiny, tmp_path_factory):
    return demo_category(tmp_path_factory.getbasetemp()) / "test"  # good/ and one folder per defect type


def test_a_rollout_that_fails_parity_against_the_previous_version_is_refused(tmp_path, tiny, parity_folder):
    """--add --parity DIR: each new version against the one before it, through ONNX Runtime on DIR's images. A
    re-tuned threshold passes (same maps and scores; its changed decisions are reported); a model whose maps moved
    is refused naming the worst image and its numbers, and nothing is written; --force writes it, recorded."""
    repo = tmp_path / "repo"
    write_model([tiny], repo, name="coin", python_backend=True)
    check = ParityCheck(parity_folder, count=16)
    images, names = _images(parity_folder)
    n = len(names)
    retuned = edited_artefact(tiny, tmp_path / "retuned.onnx", image_threshold=1e9)  # accepts every part
    ok = write_model([retuned], repo, name="coin", add=True, parity=check)["parity"]["2"]
    assert ok["ok"] and ok["against"] == 1 and ok["images"] == n > 5 and ok["max_abs_map_diff"] <= 1e-4
    assert set(ok["decisions_changed"]) <= set(names) and ok["decisions_changed"]  # reported, not refused
    assert read_sidecar(repo / "coin")["versions"]["2"]["parity"]["ok"] is True

    changed = retrained_artefact(tiny, tmp_path / "retrained.onnx")
    want = check_rollout(retuned, changed, images, names)  # the numbers the refusal must name
    assert not want["ok"] and want["worst_map_diff"] > 1e-4
    with pytest.raises(RepositoryError) as refused:
        write_model([changed], repo, name="coin", add=True, parity=check)
    message = str(refused.value)
    assert message.startswith(f"version 3 (retrained.onnx) does not reproduce version 2 (retuned.onnx) on {n} images "
                              f"of {parity_folder}: worst {want['worst_image']}: anomaly map differs by "
                              f"{want['worst_map_diff']:.2e}, score by {want['worst_score_diff']:.2e} (tolerance "
                              f"1e-04); {want['beyond_tolerance']} of {n} images beyond it. Nothing was written.")
    assert "--force" in message and "--parity-tolerance" in message
    assert read_sidecar(repo / "coin")["versions"].keys() == {"1", "2"}
    assert sorted(p.name for p in (repo / "coin").iterdir()) == ["1", "2", "config.pbtxt", "prn_edge.json"]

    forced = write_model([changed], repo, name="coin", add=True, parity=check, force=True)["parity"]["3"]
    assert forced["forced"] and not forced["ok"] and forced["worst_image"] == want["worst_image"]
    assert read_sidecar(repo / "coin")["versions"]["3"]["parity"]["forced"] is True
    loose = ParityCheck(parity_folder, tolerance=10.0)  # a deliberate change of precision or training
    assert write_model([retuned], repo, name="coin", add=True, parity=loose)["parity"]["4"]["ok"]


def _images(folder):
    from prn_edge.data.images import read_image, sample_image_files

    files = sample_image_files(folder, 16)
    return [read_image(f) for f in files], [str(f.relative_to(folder)) for f in files]


def test_parity_is_checked_between_new_versions_too_and_not_for_tensorrt_plans(tmp_path, tiny, parity_folder):
    changed = retrained_artefact(tiny, tmp_path / "retrained.onnx")
    with pytest.raises(RepositoryError, match=r"version 2 \(retrained.onnx\) does not reproduce version 1 \(tiny.onnx\)"):
        write_model([tiny, changed], tmp_path / "repo", name="coin", parity=ParityCheck(parity_folder))
    assert not (tmp_path / "repo" / "coin").exists()
    engine = fake_engine(tmp_path, tiny, max_batch=4)
    with pytest.raises(RepositoryError, match="--parity compares ONNX versions through ONNX Runtime, and model 'coin' "
                                              "serves TensorRT plans"):
        write_model([engine], tmp_path / "trt", name="coin", parity=ParityCheck(parity_folder))
    with pytest.raises(RepositoryError, match="--parity: .*no images"):
        write_model([tiny], tmp_path / "repo2", parity=ParityCheck(tmp_path / "repo2"))


def test_several_artefacts_become_consecutive_versions(tmp_path, tiny):
    second = edited_artefact(tiny, tmp_path / "second.onnx", image_threshold=0.3)
    summary = write_model([tiny, second], tmp_path / "repo")
    assert (summary["model"], summary["versions"], summary["served"]) == ("grass", [1, 2], 2)  # named by category


@pytest.mark.parametrize("changes, message", [
    ({"input": {"format": "float", "layout": "NCHW"}}, "export with --input-format uint8"),
    ({"accuracy_gate": "failed", "calibration_run": "r1"}, "FAILED its accuracy gate"),
])
def test_refused_artefacts(tmp_path, tiny, changes, message):
    bad = edited_artefact(tiny, tmp_path / "bad.onnx", **changes)
    with pytest.raises(Exception, match=message):
        write_model([bad], tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_failed_gate_allowed_explicitly_and_bad_names(tmp_path, tiny):
    bad = edited_artefact(tiny, tmp_path / "bad.onnx", accuracy_gate="failed")
    assert write_model([bad], tmp_path / "repo", allow_failed_gate=True)["config_validated"]
    with pytest.raises(RepositoryError, match="model name '../x'"):
        write_model([tiny], tmp_path / "repo", name="../x")
    with pytest.raises(RepositoryError, match="give an exported .onnx"):
        describe(tmp_path / "model.tflite")


def test_parameter_strings_are_escaped(tmp_path, tiny):
    served = describe(tiny)
    tricky = {"prn_edge.note": 'quote " backslash \\ newline \n tab \t umlaut ä and 漢字'}
    c = parse_config(config_text("coin", served, ServeOptions(), tricky))
    assert c.parameters["prn_edge.note"].string_value == tricky["prn_edge.note"]


def test_cli(tmp_path, tiny, capsys):
    rc = main(["triton-repo", str(tiny), "--out", str(tmp_path / "repo"), "--name", "coin", "--python-backend",
               "--max-batch", "4", "--max-queue-delay-us", "250"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["model"], summary["backend"], summary["config_validated"]) == ("coin", "python", True)
    assert main(["triton-repo", str(tiny), "--out", str(tmp_path / "repo"), "--name", "coin"]) == 2
    assert "--add" in capsys.readouterr().err


def test_cli_rollout_parity(tmp_path, tiny, parity_folder, capsys):
    changed = retrained_artefact(tiny, tmp_path / "retrained.onnx")
    repo = str(tmp_path / "repo")
    assert main(["triton-repo", str(tiny), "--out", repo, "--name", "coin"]) == 0
    add = ["triton-repo", str(changed), "--out", repo, "--name", "coin", "--add", "--parity", str(parity_folder),
           "--parity-images", "3"]
    capsys.readouterr()
    assert main(add) == 2
    err = capsys.readouterr().err
    assert err.startswith("prn-edge triton-repo: error: version 2 (retrained.onnx) does not reproduce version 1 "
                          "(tiny.onnx) on 3 images") and "worst " in err
    assert main(add + ["--force"]) == 0
    assert json.loads(capsys.readouterr().out)["parity"]["2"]["forced"]
    back = ["triton-repo", str(tiny), "--out", repo, "--name", "coin", "--add", "--parity", str(parity_folder),
            "--parity-images", "3"]  # back to version 1's model: as far from version 2
    assert main(back) == 2
    assert main(back + ["--parity-tolerance", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["parity"]["3"]["ok"]

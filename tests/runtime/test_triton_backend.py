"""The triton:// engine. Addresses and refusals without a server; then against the REAL tritonserver of the
nvidia-pytriton wheel (started on free ports of 127.0.0.1, serving the tiny artefact through the Python-backend
model): the same maps, scores and decisions as ONNX Runtime on the same frames, with and without shared memory;
a rollout of a new version decided with that version's metadata; a server that goes away, or answers too late,
gives EngineError; lines whose config names a triton:// engine."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import yaml

from prn_edge.runtime import EngineError, open_engine
from prn_edge.runtime.triton_backend import TritonAddress
from prn_edge.export.onnx_export import export_onnx
from tests.helpers.prn_artefacts import real_images
from tests.helpers.triton import demo_category, edited_artefact, frames_of, server_skip_reason

SKIP = server_skip_reason()
needs_server = pytest.mark.skipif(SKIP is not None, reason=f"the real tritonserver cannot run here: {SKIP}")


# ---------------------------------------------------------------------------------------------- without a server
@pytest.mark.parametrize("url, want", [
    ("triton://127.0.0.1:8001/coin", ("127.0.0.1", 8001, "coin", "", {})),
    ("triton://edge-box/coin/3?timeout_s=0.5", ("edge-box", 8001, "coin", "3", {"timeout_s": "0.5"})),
    ("triton://[::1]:9001/coin", ("::1", 9001, "coin", "", {})),
])
def test_addresses(url, want):
    a = TritonAddress.parse(url)
    assert (a.host, a.port, a.model, a.version, a.options) == want
    assert a.local == (a.host != "edge-box")


@pytest.mark.parametrize("url, message", [
    ("triton://127.0.0.1:8001/", "not a Triton model address"),
    ("triton://127.0.0.1:8001/coin/v2", "model version 'v2' is not a number"),
    ("triton://127.0.0.1:port/coin", "the port is not a number"),
    ("http://127.0.0.1:8001/coin", "not a Triton model address"),
])
def test_bad_addresses(url, message):
    with pytest.raises(EngineError, match=message):
        TritonAddress.parse(url)


def test_no_server_is_an_engine_error(dead_port):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install '.[triton]')")
    with pytest.raises(EngineError, match="the server is not reachable"):
        open_engine(f"triton://127.0.0.1:{dead_port}/coin?timeout_s=1")
    with pytest.raises(EngineError, match="unknown options"):
        open_engine(f"triton://127.0.0.1:{dead_port}/coin?shm=1")


def test_line_config_takes_an_address(tmp_path):
    from prn_edge.line import line_config

    cfg = line_config({"engine": {"path": "triton://10.0.0.5:8001/coin/2", "backend": "triton"},
                       "source": {"kind": "conveyor", "conveyor": {"dataset": "d"}}, "timing": {"deadline_s": 0.2}},
                      tmp_path)
    assert cfg.engine.path == "triton://10.0.0.5:8001/coin/2"  # not taken as a file beside the config


@pytest.fixture()
def dead_port():
    from prn_edge.serve.triton_server import free_port

    return free_port()


# ---------------------------------------------------------------------------------------------- the real server
@pytest.fixture(scope="module")
def artefact(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint (thresholds between its photos' scores) exported for uint8 RGB 64x64 frames."""
    path = tmp_path_factory.mktemp("triton_onnx") / "tiny_uint8.onnx"
    export_onnx(tiny_ckpt, path, batch=None, input_format="uint8", channel_order="rgb", lint_targets=())
    return path


def served_repository(root, onnx_path, **options):
    from prn_edge.serve.triton_repo import write_model

    write_model([onnx_path], root, name="coin", python_backend=True,
                options={"max_batch": 4, "max_queue_delay_us": 500, **options})
    return root


@pytest.fixture(scope="module")
def server(artefact, tmp_path_factory):
    if SKIP is not None:
        pytest.skip(f"the real tritonserver cannot run here: {SKIP}")
    from prn_edge.serve.triton_server import LocalTritonServer

    repo = served_repository(tmp_path_factory.mktemp("triton_repo"), artefact)
    with LocalTritonServer(repo) as s:
        yield s


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The photos the thresholds were placed between, the demo category's test images and noise: 14 frames."""
    rng = np.random.default_rng(0)
    photos = np.stack(real_images(6, 64))
    test = frames_of(demo_category(tmp_path_factory.getbasetemp()))
    return np.concatenate([photos, test, rng.integers(0, 256, (1,) + photos.shape[1:], dtype=np.uint8)])


@pytest.fixture(scope="module")
def reference(artefact, frames):
    with open_engine(artefact, threads=1) as engine:
        return engine.infer(frames)


@needs_server
@pytest.mark.parametrize("shared_memory", ["none", "system"])
def test_same_decisions_as_onnxruntime(server, frames, reference, shared_memory):
    with open_engine(server.url("coin") + f"?shared_memory={shared_memory}") as engine:
        assert engine.backend == "triton" and engine.uses_shared_memory == (shared_memory == "system")
        assert engine.input_spec.frame_shape == frames.shape[1:] and engine.metadata["model_version"] == "1"
        r = engine.infer(frames)  # 14 frames: chunks of max_batch 4
        one = engine.infer(frames[3:4])
        assert engine.last_model_version == "1" and engine.last_timings["compute"] > 0
    assert len(r) == len(frames)
    np.testing.assert_allclose(r.scores, reference.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.maps, reference.maps, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(r.decisions, reference.decisions)
    np.testing.assert_allclose(r.normalized_scores, reference.normalized_scores, atol=1e-6)
    assert r.decisions.any() and not r.decisions.all()  # the tiny model's threshold splits these frames
    np.testing.assert_allclose(one.scores, reference.scores[3:4], atol=1e-6)


@needs_server
def test_concurrent_clients_share_the_server(server, frames, reference):
    """Four cameras, each with its own client: the dynamic batcher may gather their calls; answers stay theirs."""
    errors, results = [], {}

    def camera(i):
        try:
            with open_engine(server.url("coin")) as engine:
                results[i] = [engine.infer(frames[j:j + 1]).scores[0] for j in range(len(frames))]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for scores in results.values():
        np.testing.assert_allclose(scores, reference.scores, atol=1e-6)


@needs_server
def test_a_version_the_server_does_not_have_is_an_engine_error(server):
    with pytest.raises(EngineError, match="'coin' version 5 is not found"):
        open_engine(server.url("coin", version=5))


@needs_server
def test_rollout_of_a_new_version_decides_with_its_metadata(artefact, frames, reference, tmp_path):
    """`prn-edge triton-repo --add` writes version 2 (a re-tuned threshold); the server loads it (explicit model
    control); a running engine follows it, and decides with version 2's threshold from its first answer on. An
    engine pinned to version 1 refuses to go on; with both versions served, version 1 is described by the sidecar."""
    from tritonclient.grpc import InferenceServerClient

    from prn_edge.serve.triton_repo import write_model
    from prn_edge.serve.triton_server import LocalTritonServer

    repo = served_repository(tmp_path / "repo", artefact)
    reference_threshold = open_engine(artefact).metadata["image_threshold"]
    low = float(reference.scores.min()) - 1e-3  # version 2 rejects every one of these frames
    retuned = edited_artefact(artefact, tmp_path / "retuned.onnx", image_threshold=low)
    with LocalTritonServer(repo, model_control="explicit") as server:
        follows, pinned = open_engine(server.url("coin")), open_engine(server.url("coin", version=1))
        with follows, pinned:
            assert follows.infer(frames).decisions.tolist() == reference.decisions.tolist()
            write_model([retuned], repo, name="coin", add=True)
            InferenceServerClient(server.grpc_address).load_model("coin")  # version 2 in, version 1 out
            r = follows.infer(frames)
            assert follows.last_model_version == "2" and follows.metadata["image_threshold"] == low
            assert r.decisions.all()
            np.testing.assert_allclose(r.scores, reference.scores, atol=1e-6)
            with pytest.raises(EngineError):  # asked for version 1 only, which is no longer served
                pinned.infer(frames[:1])
        # an operator serves both versions (version_policy all): the config describes version 2 only, so version 1's
        # metadata comes from the repository's sidecar
        config = repo / "coin" / "config.pbtxt"
        config.write_text(config.read_text().replace("version_policy: { latest: { num_versions: 1 } }",
                                                     "version_policy: { all: { } }"))
        InferenceServerClient(server.grpc_address).load_model("coin")
        with pytest.raises(EngineError, match="the model config describes version 2"):
            open_engine(server.url("coin", version=1))
        with open_engine(server.url("coin", version=1) + f"?repository={repo}") as old:
            assert old.metadata["image_threshold"] == reference_threshold
            assert old.infer(frames).decisions.tolist() == reference.decisions.tolist()
            assert old.last_model_version == "1"


@needs_server
@pytest.mark.parametrize("shared_memory", ["none", "system"])
def test_a_server_that_goes_away_gives_engine_error(artefact, frames, tmp_path, shared_memory):
    from prn_edge.serve.triton_server import LocalTritonServer

    repo = served_repository(tmp_path / "repo", artefact)
    server = LocalTritonServer(repo).start()
    try:
        engine = open_engine(server.url("coin") + f"?shared_memory={shared_memory}&timeout_s=2").activate()
        engine.infer(frames[:2])
        server.stop()
        with pytest.raises(EngineError, match="not reachable|no answer within"):
            engine.infer(frames[:2])
        engine.close()  # frees its shared memory though the server is gone
        assert not engine.uses_shared_memory
    finally:
        server.stop()


@needs_server
def test_an_answer_later_than_timeout_s_gives_engine_error(artefact, frames, tmp_path):
    from prn_edge.serve.triton_server import LocalTritonServer

    repo = served_repository(tmp_path / "repo", artefact)
    model_py = repo / "coin" / "1" / "model.py"
    slow = model_py.read_text().replace("    def execute(self, requests):\n",
                                        "    def execute(self, requests):\n        import time; time.sleep(1.5)\n")
    model_py.write_text(slow)
    with LocalTritonServer(repo) as server:
        with open_engine(server.url("coin") + "?timeout_s=0.3") as engine:
            with pytest.raises(EngineError, match="no answer within timeout_s=0.3 s"):
                engine.infer(frames[:1])


@needs_server
def test_two_camera_lines_on_one_triton_model(server, tmp_path, tmp_path_factory):
    """`prn-edge run --config cam0.yaml --config cam1.yaml` with engine.path triton://...: each line its own client
    (not a SharedEngine), every part decided by the model."""
    from prn_edge.cli import main
    from prn_edge.line.outputs import read_decisions

    category = str(demo_category(tmp_path_factory.getbasetemp()))
    paths = []
    for i in range(2):
        d = tmp_path / f"cam{i}"
        d.mkdir()
        data = {"name": f"cam{i}", "engine": {"path": server.url("coin"), "warmup": 1},
                "source": {"kind": "conveyor", "conveyor": {"dataset": category, "rate_hz": 30, "parts": 12,
                                                            "seed": i}},
                "timing": {"deadline_s": 0.4}, "outputs": [{"kind": "csv", "path": "d.csv"}],
                "monitor": {"status_line": False}}
        (d / "line.yaml").write_text(yaml.safe_dump(data))
        paths.append(str(d / "line.yaml"))
    assert main(["run", "--config", paths[0], "--config", paths[1], "--summary-json", str(tmp_path / "s.json")]) == 0
    for i, s in enumerate(json.loads((tmp_path / "s.json").read_text())):
        assert s["parts"] == 12 and s["undecided"] == 0 and s["engine"]["backend"] == "triton"
        rows = read_decisions(tmp_path / f"cam{i}" / "d.csv")
        assert sum(r["cause"] == "model" for r in rows) >= 10


@needs_server
def test_a_line_records_which_model_version_decided_each_part(artefact, tmp_path, tmp_path_factory):
    """A line on triton://.../coin while `triton-repo --add --parity` rolls out version 2 (a re-tuned threshold:
    the same maps and scores, so parity passes) and the server loads it: no part undecided, and the CSV's artefact
    column and the line's metrics say which model version decided each part."""
    from tritonclient.grpc import InferenceServerClient

    from prn_edge.line import Budget, Line, LoopOptions
    from prn_edge.line.outputs import CsvOutput, read_decisions
    from prn_edge.line.sources import SyntheticConveyor
    from prn_edge.serve.triton_repo import ParityCheck, write_model
    from prn_edge.serve.triton_server import LocalTritonServer
    from prn_edge.sim.doubles import RecordingOutput

    category = demo_category(tmp_path_factory.getbasetemp())
    repo = served_repository(tmp_path / "repo", artefact)
    retuned = edited_artefact(artefact, tmp_path / "retuned.onnx", image_threshold=1e9)  # accepts every part
    rec = RecordingOutput()
    with LocalTritonServer(repo, model_control="explicit") as server:
        line = Line(SyntheticConveyor(category, rate_hz=30, parts=0), open_engine(server.url("coin")),
                    [rec, CsvOutput(tmp_path / "d.csv")], Budget.from_line(deadline_s=0.4), LoopOptions(warmup=1),
                    name="cam0")
        assert line.artefact.startswith("coin/1:tiny_uint8.onnx@")
        rollout: dict = {}

        def roll_out():
            try:
                while len(rec.parts) < 15:
                    time.sleep(0.05)
                rollout.update(write_model([retuned], repo, name="coin", add=True,
                                           parity=ParityCheck(category / "test"))["parity"]["2"])
                InferenceServerClient(server.grpc_address).load_model("coin")
                end = time.monotonic() + 30
                while time.monotonic() < end and sum(p.artefact.startswith("coin/2:") for p in rec.parts) < 15:
                    time.sleep(0.05)
            finally:
                line.stop()

        t = threading.Thread(target=roll_out)
        t.start()
        summary = line.run(duration_s=120)
        t.join()
    assert rollout["ok"] and summary["undecided"] == 0
    model = sorted((p for p in rec.parts if not p.decision.fail_safe), key=lambda p: p.seq)
    labels = [p.artefact.split(":")[0] for p in model]
    switch = labels.index("coin/2")
    assert switch >= 10 and set(labels[:switch]) == {"coin/1"} and labels.count("coin/2") == len(model) - switch
    assert all(p.decision.verdict == "good" for p in model[switch:])  # version 2's threshold decides
    rows = {int(r["seq"]): r["artefact"] for r in read_decisions(tmp_path / "d.csv")}
    assert all(rows[p.seq] == p.artefact for p in model)
    v2 = model[-1].artefact
    assert v2.startswith("coin/2:retuned.onnx@") and line.metrics.value("prn_line_artefact_info", artefact=v2) == 1
    assert summary["model_decisions_by_artefact"][v2] == len(model) - switch
    assert summary["engine"]["model"] == "coin/2"

"""Every user error is one line: `prn-edge <verb>: error: <what is wrong and what to do>`, exit code 2, no
traceback, and it comes before any long work (no data, model or artefact needed to reach it)."""
from __future__ import annotations

import pytest
import yaml

from prn_edge.cli import main
from prn_edge.model import memory

BINARY = b"\x7fELF\x02\x01\x01\x00\xd0\xcf\x11\xe0" * 8  # not UTF-8: what `--config /bin/ls` reads


def line_yaml(tmp_path, **patch) -> str:
    """A line config whose source, engine and outputs point at nothing that exists: only validation can run."""
    data = {"source": {"kind": "conveyor", "conveyor": {"dataset": str(tmp_path / "no-data")}},
            "timing": {"deadline_s": 0.1}, "engine": {"path": str(tmp_path / "no-model.onnx")},
            "monitor": {"status_line": False}, "outputs": [{"kind": "csv", "path": str(tmp_path / "d.csv")}]}
    for section, values in patch.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def binary_file(tmp_path) -> str:
    path = tmp_path / "binary"
    path.write_bytes(BINARY)
    return str(path)


def below_a_file(tmp_path, name: str) -> str:
    """An output path whose folder cannot be made: one of its parents is a file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return str(blocker / "sub" / name)


MISSING = "missing"  # replaced by a path below tmp_path that does not exist

CASES = [
    # --set: malformed overrides, YAML, element types, values out of range
    (["info", "--set", "train.lr="], "train.lr: expected a number, got None"),
    (["info", "--set", "model: [1"], "override 'model: [1' must look like section.key=value"),
    (["info", "--set", "model.dim=[1"], "override 'model.dim=[1': the value is not valid YAML"),
    (["info", "--set", "foo"], "override 'foo' must look like section.key=value"),
    (["info", "--set", "model..dim=8"], "'model..dim' is not a key"),
    (["info", "--set", 'model.patch_sizes=["a"]'], r"model.patch_sizes[0]: expected a number, got 'a'"),
    (["info", "--set", "model.heads=0"], "model.heads=0: must be >= 1"),
    (["info", "--set", "model.decoder_dims=[0,0,0,0]"], "model.decoder_dims=[0, 0, 0, 0]"),
    (["info", "--set", "synth.opacity=[0.5]"], "synth.opacity=[0.5]: need [low, high]"),
    (["info", "--set", "train.lr=.nan"], "train.lr: expected a finite number, got nan"),
    (["info", "--set", "train.seed=-1"], "train.seed=-1"),
    (["info", "--set", "model.image_size=32768"], "model.image_size=32768: must be a multiple of 32 from 64 to 2048"),
    (["info", "--set", "model.num_prototypes=1e8"], "model.num_prototypes: expected a number, got '1e8'; YAML"),
    (["info", "--set", "model.num_prototypes=100000000"], "model.num_prototypes=100000000: 0 (chooses"),
    (["info", "--set", "variant=prn-huge"], "variant='prn-huge' is not allowed"),
    # config files that are not YAML text
    (["info", "--config", "BINARY"], "is not a text file; give a YAML file"),
    (["info", "--config", MISSING], "does not exist"),
    # numbers and sizes of the verbs' flags
    (["export", "m.pt", "-o", "OUT/m.onnx", "--input-size", "abc"], "argument --input-size: 'abc': give 2 integers"),
    (["export", "m.pt", "-o", "OUT/m.onnx", "--batch", "0"], "argument --batch: '0': give a batch size >= 1"),
    (["bench", "m.onnx", "--batch", "abc"], "argument --batch: 'abc' is not an integer"),
    (["bench", "m.onnx", "--batch", "0"], "argument --batch: '0': give an integer from 1 to 1024"),
    (["bench", "m.onnx", "--iters", "0"], "argument --iters: '0': give an integer >= 1"),
    (["bench", "m.onnx", "--rounds", "0"], "argument --rounds: '0': give an integer >= 1"),
    (["run", "--config", "LINE", "--duration", "-1"], "argument --duration: '-1': give a number > 0"),
    (["run", "--config", "LINE", "--duration", "nan"], "argument --duration: 'nan': give a number > 0"),
    (["train", "--data", "d", "--out", "OUT/m.pt", "--step", "5"], "unrecognized arguments: '--step' '5'"),
    # outputs that cannot be written, refused before the work that would fill them
    (["export", "m.pt", "-o", "BLOCKED/m.onnx"], "argument -o/--output: "),
    (["eval", "m.pt", "--data", "d", "--json", "BLOCKED/e.json"], "argument --json: "),
    (["bench", "m.onnx", "--json", "BLOCKED/b.json"], "argument --json: "),
    (["train", "--data", "d", "--out", "BLOCKED/m.pt"], "argument --out: "),
    (["run", "--config", "LINE", "--summary-json", "BLOCKED/s.json"], "argument --summary-json: "),
    (["train", "--data", "d", "--out", "OUT"], "a folder is there; give a file path"),
    # line YAML of `prn-edge run`
    (["run", "--config", "LINE:region.roi=a"], r"region.roi[0]: expected a number, got 'a'"),
    (["run", "--config", "LINE:decision.uncertain_band=x"], r"decision.uncertain_band[0]: expected a number, got 'x'"),
    (["run", "--config", "LINE:parts=-5"], "source.conveyor.parts=-5 must be >= 0"),
    (["run", "--config", "BINARY"], "is not a text file; give a YAML file"),
    # --resume needs <out>.last.pt; refused before the data is read (the data folder does not exist either)
    (["train", "--data", MISSING, "--out", "OUT/m.pt", "--resume"], "m.last.pt does not exist"),
]

LINE_PATCHES = {"region.roi=a": {"region": {"roi": ["a", 1, 2, 3]}},
                "decision.uncertain_band=x": {"decision": {"uncertain_band": ["x", "y"]}},
                "parts=-5": {"source": {"kind": "conveyor",
                                        "conveyor": {"dataset": "no-data", "parts": -5}}}}


def concrete(argv: list[str], tmp_path) -> list[str]:
    out = []
    for a in argv:
        if a == "BINARY":
            a = binary_file(tmp_path)
        elif a == MISSING:
            a = str(tmp_path / "missing")
        elif a.startswith("LINE"):
            a = line_yaml(tmp_path, **LINE_PATCHES.get(a.partition(":")[2], {}))
        elif a.startswith("BLOCKED/"):
            a = below_a_file(tmp_path, a.partition("/")[2])
        elif a.startswith("OUT"):
            a = str(tmp_path / a.partition("/")[2])
        out.append(a)
    return out


def assert_one_line_error(rc: int, err: str, verb: str, fragment: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"prn-edge {verb}: error: "), err
    assert fragment in lines[0], err


@pytest.mark.parametrize("argv, fragment", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_user_error_is_one_line(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative inputs (m.pt, d) do not exist
    rc = main(concrete(argv, tmp_path))
    assert_one_line_error(rc, capsys.readouterr().err, argv[0], fragment)
    assert not (tmp_path / "blocker" / "sub").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {"binary", "blocker", "line.yaml"}  # nothing written


def test_memory_a_config_would_need_is_checked_before_the_model_is_built(capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)  # 1 MiB: no model fits
    rc = main(["info", "--variant", "prn-tiny"])
    err = capsys.readouterr().err
    assert_one_line_error(rc, err, "info", "GiB of memory for a batch of 1, but 0.0 GiB are available; lower "
                                           "model.image_size or model.num_prototypes")


def test_the_memory_estimate_grows_with_the_configuration():
    from prn_edge.config import make_config

    small = memory.estimate_bytes(make_config("prn-edge").model, batch=8, num_images=100)
    # the default trains in under 3 GiB, most of it the k-means of the 4096-centre distance memories
    assert 2**27 < small < 3 * 2**30
    big = make_config("prn-paper", {"model": {"image_size": 2048}}).model
    assert memory.estimate_bytes(big, batch=1, num_images=100, training=False) > 50 * 2**30  # attention at stride 4
    wide, tall, large = (make_config("prn-edge", {"model": {"image_size": s}}).model
                         for s in ([256, 512], [512, 256], 512))
    assert small < memory.estimate_bytes(wide, batch=8, num_images=100) < memory.estimate_bytes(large, batch=8,
                                                                                              num_images=100)
    assert memory.estimate_bytes(wide, batch=8, num_images=100) == memory.estimate_bytes(tall, batch=8, num_images=100)
    # a joint memory holds every image's joined features at the finest distance scale while it is fitted
    joint = make_config("prn-edge", {"model": {"image_size": 512, "distance_features": "joint",
                                               "distance_scales": [0, 1, 2]}}).model
    per_scale, both = (make_config("prn-edge", {"model": {"image_size": 512, "distance_features": f,
                                                          "distance_scales": [0, 1, 2]}}).model
                       for f in ("per_scale", "both"))
    extra = 2 * 200 * 128 * 128 * (24 + 40 + 112) * 4  # 200 images, stride 4 at 512 px, the three scales' channels
    assert memory.estimate_bytes(joint, batch=8, num_images=200) - memory.estimate_bytes(
        per_scale, batch=8, num_images=200) >= 0.9 * extra
    # both (the default): the joint memory's features and the per-scale memories' centres as well
    assert memory.estimate_bytes(both, batch=8, num_images=200) - memory.estimate_bytes(
        joint, batch=8, num_images=200) >= 1024 * (24 + 40 + 112) * 4
    more, fewer = (make_config("prn-edge", {"model": {"num_prototypes": k, "distance_memory": 0}}).model
                   for k in (1024, 0))
    assert memory.estimate_bytes(more, batch=8, num_images=100) > 3 * memory.estimate_bytes(fewer, batch=8,
                                                                                           num_images=100)
    # the distance memory's k-means and distance matrices count too; nothing when no map reads it
    mem = make_config("prn-edge", {"model": {"distance_memory": 1024}}).model
    assert small > 2 * memory.estimate_bytes(mem, batch=8, num_images=100)
    off = make_config("prn-edge", {"model": {"distance_memory": 4096, "distance_fusion": "none"}}).model
    assert memory.estimate_bytes(off, batch=8, num_images=100) < small

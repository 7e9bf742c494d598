"""Property tests: whatever a user writes in a config, a --set or on the command line, the answer is a valid config
or the project's config error; a verb ends with exit code 0 (help) or 2, never a traceback, and leaves no file
behind when it fails. Inputs always point at nothing, so no verb reaches long work."""
from __future__ import annotations

import argparse
import dataclasses
import typing
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prn_edge.cli import OUT_FILE, OUT_FOLDER, build_parser, main
from prn_edge.config import VARIANTS, Config, _merge, load_config_file, make_config, parse_override
from prn_edge.errors import ConfigError
from prn_edge.line import registry
from prn_edge.line.config import LineConfig, line_config, load_line_config
from prn_edge.line.errors import LineConfigError

# no deadline and no too_slow health check: both time the machine, and a shared CI machine is busy at times
SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text a process can receive in argv or read from a YAML file: no lone surrogates, no NUL.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT  # floats include nan and +-inf
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=3),
                      max_leaves=8)
# Values near the defaults, so that many examples get past the type checks into the range checks.
NEAR = st.integers(-2, 4) | st.floats(-1, 2) | st.lists(st.integers(-1, 4) | st.floats(-1, 2), max_size=5)


def key_paths(cls: type, prefix: tuple = ()) -> list[tuple]:
    """Every key of a config dataclass, sections included: ("model",), ("model", "dim"), ..."""
    out = []
    for f in dataclasses.fields(cls):
        path = prefix + (f.name,)
        out.append(path)
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            out += key_paths(type(default), path)
    return out


def nest(path: tuple, value) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def overrides(key: tuple, paths: list[tuple]):
    """A nested dict giving a random value to `key`, and sometimes to another of `paths` too."""
    pairs = st.lists(st.tuples(st.sampled_from(paths), NEAR | VALUES), max_size=1)
    return st.tuples(NEAR | VALUES, pairs).map(lambda vp: _merge_all([nest(key, vp[0])] + [nest(p, v) for p, v in vp[1]]))


def _merge_all(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        out = _merge(out, d)
    return out


def same_types(cfg, default) -> None:
    """A validated config holds the types of its defaults (ints as int, numbers in tuples converted)."""
    for f in dataclasses.fields(default):
        got, want = getattr(cfg, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(want):
            same_types(got, want)
        elif f.name == "options" and dataclasses.is_dataclass(got):  # a source kind's: against that kind's defaults
            same_types(got, type(got)())
        elif "Union" in str(f.type):  # model.image_size, model.map_contrast: a number (pair) or "auto"
            hint = typing.get_type_hints(type(default))[f.name]
            allowed = tuple(typing.get_origin(t) or t for t in typing.get_args(hint))
            assert isinstance(got, allowed) and not isinstance(got, bool), (f.name, got)
        elif f.name != "outputs":
            assert type(got) is type(want), (f.name, got)
            if isinstance(want, tuple) and want:
                assert all(type(v) is type(want[0]) for v in got), (f.name, got)


TRAIN_PATHS = key_paths(Config) + [("variant",)]
OUTPUT_KINDS = {name: kind.options for name, kind in registry.outputs().items()}
# source.options is filled from the section named by source.kind: every kind's section and keys
LINE_PATHS = [p for p in key_paths(LineConfig) if p != ("source", "options")] + [
    path for name, kind in registry.sources().items() for path in [("source", name)] + key_paths(kind.options, ("source", name))]
KEY_SETTINGS = settings(SETTINGS, max_examples=25)  # per key: every key gets its share


@pytest.mark.parametrize("key", TRAIN_PATHS, ids=".".join)
def test_training_config_of_any_values_is_valid_or_a_config_error(key):
    @KEY_SETTINGS
    @given(variant=st.sampled_from(sorted(VARIANTS)), data=overrides(key, TRAIN_PATHS))
    def check(variant, data):
        try:
            cfg = make_config(variant, data)
        except ConfigError:
            return
        assert isinstance(cfg, Config) and cfg.variant == variant
        same_types(cfg, make_config(variant))

    check()


@SETTINGS
@given(variant=st.sampled_from(sorted(VARIANTS)) | VALUES,
       data=st.dictionaries(st.sampled_from(["model", "synth", "train", "variant"]) | TEXT, VALUES, max_size=2))
def test_any_variant_and_sections_are_valid_or_a_config_error(variant, data):
    try:
        cfg = make_config(variant, data)
    except ConfigError:
        return
    assert isinstance(cfg, Config) and cfg.variant == variant
    same_types(cfg, make_config(variant))


@SETTINGS
@given(key=st.sampled_from([".".join(p) for p in TRAIN_PATHS]) | TEXT,
       raw=TEXT | VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))
def test_any_set_override_is_valid_or_a_config_error(key, raw):
    try:
        make_config("prn-tiny", parse_override(f"{key}={raw}"))
    except ConfigError:
        pass


def outputs():
    kinds = st.sampled_from(sorted(OUTPUT_KINDS)) | VALUES
    fields = sorted({f.name for cls in OUTPUT_KINDS.values() for f in dataclasses.fields(cls)})
    item = st.builds(lambda kind, rest: {"kind": kind, **rest}, kinds,
                     st.dictionaries(st.sampled_from(fields) | TEXT, VALUES, max_size=3))
    return st.lists(item | VALUES, max_size=3) | VALUES


@pytest.mark.parametrize("key", LINE_PATHS, ids=".".join)
def test_line_config_of_any_values_is_valid_or_a_line_config_error(key):
    @KEY_SETTINGS
    @given(data=overrides(key, LINE_PATHS), outs=st.none() | outputs())
    def check(data, outs):
        if outs is not None and key != ("outputs",):
            data["outputs"] = outs
        try:
            cfg = line_config(data, "/lines")
        except LineConfigError:
            return
        assert isinstance(cfg, LineConfig)
        same_types(cfg, LineConfig())

    check()


@SETTINGS
@given(content=st.binary(max_size=64) | VALUES.map(lambda v: yaml.safe_dump(v).encode()) | TEXT.map(str.encode))
def test_config_files_of_any_bytes_load_or_say_why_not(content, tmp_path):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "config.yaml"
    path.write_bytes(content)
    try:
        assert isinstance(load_config_file(path), dict)
    except ConfigError:
        pass
    try:
        load_line_config(path)
    except LineConfigError:
        pass


# ------------------------------------------------------------------------------------------------ the verbs
def verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def fixed_args(verb: str, root: Path) -> list[str]:
    """Required arguments: inputs that do not exist (the verb fails before any work), outputs in a fresh folder,
    and for the two verbs that need no input, an output that cannot be written."""
    missing, out, blocked = str(root / "missing"), root / "out", str(root / "blocker" / "x")
    return {
        "info": ["--config", missing + ".yaml"],
        "make-dataset": ["--out", blocked],
        "synth": ["--data", missing, "--preview", str(out / "p.png")],
        "train": ["--data", missing, "--out", str(out / "m.pt")],
        "eval": [missing + ".pt", "--data", missing],
        "export": [missing + ".pt", "-o", str(out / "m.onnx")],
        "calibrate": [missing + ".pt", "--data", missing, "--run", "r"],
        "predict": [missing + ".onnx", missing, "-o", str(out / "pred")],
        "threshold": [missing + ".onnx", "--good", missing, "-o", str(out / "t.onnx")],
        "build": [missing + ".onnx", "-o", str(out / "e.engine")],
        "bench": [missing + ".onnx"],
        "run": ["--config", missing + ".yaml"],
        "reload": ["--pid-file", missing + ".pid"],
        "cameras": ["--cti", missing + ".cti"],
        "demo": ["--workdir", blocked],
        "service": ["install", "--config", missing + ".yaml", "--unit-dir", str(out)],
        "triton-repo": [missing + ".onnx", "--out", str(out / "repo")],
    }[verb]


def flag_values(action: argparse.Action, root: Path):
    """Values for one optional flag: from its choices, an output path (writable or not), or anything."""
    junk = TEXT | st.integers(-10**6, 10**6).map(str) | st.floats().map(repr) | st.sampled_from(
        ["0", "-1", "nan", "inf", "1e309", "", "dynamic", "64x64", "0x0", "1,2,3", "abc", "1e8", "--", "-h"])
    if action.nargs == 0:
        return st.just([])
    if action.type in (OUT_FILE, OUT_FOLDER):
        one = st.sampled_from([str(root / "out" / "o"), str(root / "blocker" / "o")]) | junk
    elif action.choices:
        one = st.sampled_from(list(action.choices)) | junk
    else:
        one = junk
    return st.lists(one, min_size=1, max_size=3) if action.nargs in ("+", "*") else one.map(lambda v: [v])


def files_below(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "blocker")


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_any_flags_end_in_help_or_a_one_line_error(verb, tmp_path, capsys, monkeypatch):
    parser = verbs()[verb]
    fixed = set(fixed_args(verb, tmp_path))
    optional = [a for a in parser._actions if a.option_strings and not a.required and "-h" not in a.option_strings
                and not fixed & set(a.option_strings)]

    @SETTINGS
    @given(st.data())
    def check(data):
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        (root / "blocker").write_text("a file where a folder would have to be")
        monkeypatch.chdir(root)  # relative paths and default outputs (calibration/, runs/demo) land in root
        argv = [verb] + fixed_args(verb, root)
        for action in data.draw(st.lists(st.sampled_from(optional), unique=True, max_size=4)) if optional else []:
            argv += [action.option_strings[-1]] + data.draw(flag_values(action, root))
        capsys.readouterr()
        rc = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert rc in (0, 2), (argv, rc, err)
        if rc == 0:
            assert "usage:" in out, argv  # only --help (or an abbreviation of it) ends well here
        else:
            assert f"prn-edge {verb}: error: " in err, (argv, err)
        assert files_below(root) == [], argv  # a failed verb leaves no file, at its outputs or elsewhere

    check()

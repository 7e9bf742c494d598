"""A Triton Inference Server model repository from prn_edge artefacts.

    write_model(["coin.onnx"], "model_repository", name="coin")            # onnxruntime backend, version 1
    write_model(["coin_v2.onnx"], "model_repository", name="coin", add=True)  # version 2 beside it
    write_model(["coin.engine"], "model_repository", name="coin_trt")      # tensorrt backend (engine + manifest)
    write_model(["coin.onnx"], "model_repository", python_backend=True)    # model.py running ONNX Runtime

    model_repository/coin/config.pbtxt     uint8 NHWC frames in, anomaly_map and score out, dynamic batching,
                                           instance group, version policy, the decision parameters
    model_repository/coin/prn_edge.json    the sidecar: every version's parameters (prn_edge.artefact.triton)
    model_repository/coin/<version>/model.onnx | model.plan | model.py + model.onnx

All versions of a model share one config, so they must share backend, input and outputs; thresholds may differ
(the config's parameters describe the newest version, the only one Triton serves). Every config written is parsed
against Triton's ModelConfig schema when tritonclient is installed.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional, Sequence

from ..artefact import (OUTPUT_MAP, OUTPUT_SCORE, InputSpec, decode_metadata, read_engine_manifest, read_metadata,
                        sha256_file, write_atomic)
from ..artefact.errors import ArtefactError
from ..artefact.manifest import new_manifest, write_manifest
from ..artefact.triton import TRITON_MODEL, read_sidecar, sidecar_path, version_parameters
from ..errors import PrnEdgeError
from ..runtime import check_gate
from ..verify import MAP_TOLERANCE

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
# backend -> the file Triton loads from a version folder (the python backend's model.py runs a model.onnx beside it)
BACKENDS = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}
PYTHON_MODEL = Path(__file__).with_name("triton_model.py")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RepositoryError(PrnEdgeError):
    """A Triton model cannot be written from these artefacts or options; the message says what to change."""


@dataclass
class ServeOptions:
    """How Triton serves the model (written into config.pbtxt). None in a `--add` keeps the model's earlier value."""
    max_batch: int = 8  # max_batch_size for dynamic-batch artefacts (an engine's: at most its profile's maximum)
    preferred_batch: tuple = ()  # dynamic batcher's preferred batch sizes (none: any size up to max_batch)
    max_queue_delay_us: int = 100  # how long the batcher holds a request to gather more
    instances: int = 1  # model instances (instance_group count)
    instance_kind: str = "auto"  # auto (GPU for onnxruntime/tensorrt, CPU for python) | gpu | cpu
    ort_threads: int = 0  # python backend: ONNX Runtime intra-op threads per instance (0 = its default)

    def validate(self, backend: str) -> "ServeOptions":
        if self.max_batch < 1 or self.instances < 1 or self.max_queue_delay_us < 0 or self.ort_threads < 0:
            raise RepositoryError("max_batch and instances must be >= 1, max_queue_delay_us and ort_threads >= 0")
        bad = [b for b in self.preferred_batch if not 1 <= int(b) <= self.max_batch]
        if bad:
            raise RepositoryError(f"preferred batch sizes {bad} are outside 1..max_batch ({self.max_batch})")
        if self.instance_kind not in ("auto", "gpu", "cpu"):
            raise RepositoryError(f"instance_kind={self.instance_kind!r}: choose auto, gpu or cpu")
        if backend == "tensorrt" and self.instance_kind == "cpu":
            raise RepositoryError("a TensorRT plan runs on a GPU only; drop --instance-kind cpu")
        return self

    def kind(self, backend: str) -> str:
        if self.instance_kind == "auto":
            return "KIND_CPU" if backend == "python" else "KIND_GPU"
        return f"KIND_{self.instance_kind.upper()}"


@dataclass
class ParityCheck:
    """A rollout's parity check (`--parity DIR`): each new version against the one before it on at most `count`
    images of `images` (spread over the folder), maps and scores through ONNX Runtime within `tolerance`
    (prn_edge.verify.check_rollout). A version that fails it is not written unless forced."""
    images: Path
    count: int = 16
    tolerance: float = MAP_TOLERANCE
    threads: Optional[int] = 2


@dataclass
class ServedArtefact:
    """An artefact as Triton will see it."""
    path: Path
    backend: str
    props: dict  # its prn_edge metadata as string key/values (ONNX metadata_props, or an engine manifest's)
    spec: InputSpec
    map_dims: tuple  # anomaly_map per frame: (1, Hm, Wm)
    max_batch: Optional[int]  # an engine's largest batch (None: the artefact's batch is dynamic without limit)
    provenance: dict = field(default_factory=dict)  # extra parameters (an engine's TensorRT version, ...)


# ---------------------------------------------------------------------------------------------- reading artefacts
def describe(path: str | Path, python_backend: bool = False, allow_failed_gate: bool = False) -> ServedArtefact:
    """What Triton needs to know about an artefact; RepositoryError when it cannot be served as asked."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            served = _describe_onnx(path, "python" if python_backend else "onnxruntime")
        elif suffix in ENGINE_SUFFIXES:
            if python_backend:
                raise RepositoryError(f"{path.name}: --python-backend runs the ONNX with ONNX Runtime; give the "
                                      ".onnx the engine was built from")
            served = _describe_engine(path)
        else:
            raise RepositoryError(f"{path}: give an exported .onnx or a built .engine/.plan (with its manifest)")
    except ArtefactError as e:
        raise RepositoryError(str(e)) from None
    meta = decode_metadata(served.props, str(path))
    check_gate(meta, path, allow_failed_gate)
    if served.spec.format != "uint8" or served.spec.layout != "NHWC":
        raise RepositoryError(f"{path.name} takes {served.spec.format} {served.spec.layout} tensors; Triton serves "
                              "camera frames: export with --input-format uint8 (frames in, preprocessing in the graph)")
    return served


def _describe_onnx(path: Path, backend: str) -> ServedArtefact:
    from ..artefact.onnx_header import read_header  # the wire format: no onnx needed to write a repository

    meta = read_metadata(path)  # the checks every reader makes (readable, prn_edge metadata, external data)
    props, external, _ = read_header(path.read_bytes())
    if external:
        raise RepositoryError(f"{path.name} keeps weights in external data files; export it again in one file "
                              "(`prn-edge export` does by default)")
    spec: InputSpec = meta["input_spec"]
    return ServedArtefact(path, backend, props, spec, _map_dims(spec), None)


def _describe_engine(path: Path) -> ServedArtefact:
    manifest = read_engine_manifest(path)
    props = dict(manifest.get("metadata") or {})
    spec: InputSpec = decode_metadata(props, f"manifest of {path.name}")["input_spec"]
    provenance = {k: manifest[k] for k in ("onnx_sha256", "tensorrt_version", "compute_capability", "precision")
                  if manifest.get(k)}
    return ServedArtefact(path, "tensorrt", props, spec, _map_dims(spec), manifest.get("max_batch"), provenance)


def _map_dims(spec: InputSpec) -> tuple:
    """anomaly_map per frame: (1, Hm, Wm) at the model's resolution, as every prn_edge export gives it."""
    return 1, spec.model_height, spec.model_width


# ---------------------------------------------------------------------------------------------- config.pbtxt
def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def config_text(name: str, served: ServedArtefact, opts: ServeOptions, parameters: dict[str, str]) -> str:
    """config.pbtxt of a model serving `served`'s kind of artefact with these options and parameters."""
    spec = served.spec
    batching = spec.batch is None
    static = () if batching else (spec.batch,)
    frame = (spec.height, spec.width, spec.channels)
    lines = [f"name: {_quote(name)}", f"backend: {_quote(served.backend)}",
             f"max_batch_size: {opts.max_batch if batching else 0}",
             "version_policy: { latest: { num_versions: 1 } }",
             "input [", "  {", f"    name: {_quote(spec.name)}", "    data_type: TYPE_UINT8"]
    if batching:
        lines.append("    format: FORMAT_NHWC")
    lines += [f"    dims: {_dims(static + frame)}", "  }", "]", "output [",
              "  {", f"    name: {_quote(OUTPUT_MAP)}", "    data_type: TYPE_FP32",
              f"    dims: {_dims(static + tuple(served.map_dims))}", "  },",
              "  {", f"    name: {_quote(OUTPUT_SCORE)}", "    data_type: TYPE_FP32"]
    # score is (N,) in the artefact; a batched output needs a dimension besides the batch, given back by reshape
    lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"] if batching else [f"    dims: {_dims(static)}"]
    lines += ["  }", "]"]
    if batching:
        lines.append("dynamic_batching {")
        if opts.preferred_batch:
            lines.append(f"  preferred_batch_size: {_dims(opts.preferred_batch)}")
        lines += [f"  max_queue_delay_microseconds: {int(opts.max_queue_delay_us)}", "}"]
    lines += ["instance_group [", f"  {{ count: {int(opts.instances)} kind: {opts.kind(served.backend)} }}", "]"]
    params = dict(parameters)
    if served.backend == "python" and opts.ort_threads:
        params["ort_threads"] = str(opts.ort_threads)
    lines.append("parameters [")
    lines += [f"  {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}," for k, v in sorted(params.items())]
    lines[-1] = lines[-1].rstrip(",")
    lines.append("]")
    return "\n".join(lines) + "\n"


def parse_config(text: str, source: str = "config.pbtxt"):
    """Triton's ModelConfig message of a config.pbtxt (tritonclient's model_config_pb2 and protobuf's text_format);
    None when tritonclient is not installed. RepositoryError when the text does not parse against the schema."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise RepositoryError(f"{source} does not parse as a Triton ModelConfig ({e}); this is a prn_edge bug: "
                              "report it with the file") from None


# ---------------------------------------------------------------------------------------------- writing
def write_model(artefacts: Sequence[str | Path], repository: str | Path, name: Optional[str] = None,
                add: bool = False, python_backend: bool = False, options: Optional[dict] = None,
                allow_failed_gate: bool = False, parity: Optional[ParityCheck] = None, force: bool = False) -> dict:
    """Write `artefacts` as consecutive versions of one Triton model in `repository`; returns a summary.

    name: the model's name (default: the first artefact's category, else its file name). add: place them after
    the model's existing versions (without it, an existing model is refused). options: ServeOptions fields; in an
    `add`, those not given keep the model's earlier values. parity: check each new version against the one before
    it first; one that fails is a RepositoryError naming the worst image, and nothing is written, unless `force`
    (then it is written, its failed parity recorded in the sidecar).
    """
    if not artefacts:
        raise RepositoryError("no artefacts given; name one or more .onnx or .engine files")
    served = [describe(a, python_backend, allow_failed_gate) for a in artefacts]
    name = name or _default_name(served[0])
    if not _NAME.match(name):
        raise RepositoryError(f"model name {name!r}: use letters, digits, '_', '-' and '.' (it is a folder name "
                              "and part of the URL triton://host:8001/NAME)")
    model_dir = Path(repository) / name
    sidecar = _existing(model_dir, add, name)
    backend = sidecar["backend"] if sidecar else served[0].backend
    if backend == "python":  # an ONNX added to a Python-backend model runs there too, --python-backend or not
        served = [replace(s, backend="python") if s.backend == "onnxruntime" else s for s in served]
    reference = ((InputSpec.from_dict(sidecar["input"]), tuple(sidecar["map_dims"])) if sidecar
                 else (served[0].spec, tuple(served[0].map_dims)))
    for s in served:
        _check_same_model(s, backend, reference, name)
    opts = _options(sidecar, options, backend, served)
    versions = dict(sidecar["versions"]) if sidecar else {}
    planned = []
    for s in served:
        version = max((int(v) for v in versions), default=0) + 1
        sha = sha256_file(s.path)
        versions[str(version)] = {"artefact": s.path.name, "source": str(s.path.resolve()), "sha256": sha,
                                  "file": BACKENDS[s.backend], "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                  "parameters": version_parameters(s.props, version, s.path.name, sha, s.provenance)}
        planned.append((version, s))
    newest_version, newest = planned[-1]
    text = config_text(name, newest, opts, versions[str(newest_version)]["parameters"])
    validated = parse_config(text, str(model_dir / "config.pbtxt")) is not None  # before anything is written
    reports = _check_rollout(model_dir, backend, (sidecar or {}).get("versions") or {}, planned, parity, force) \
        if parity is not None else {}
    for version, report in reports.items():
        versions[str(version)]["parity"] = {k: report[k] for k in PARITY_RECORD if k in report}
    for version, s in planned:
        _write_version(model_dir, version, s)
    write_atomic(model_dir / "config.pbtxt", text.encode())
    write_manifest(sidecar_path(model_dir), new_manifest(
        TRITON_MODEL, name=name, backend=backend, options=asdict(opts), input=newest.spec.to_dict(),
        map_dims=list(newest.map_dims), versions=versions))
    return {"model": name, "path": str(model_dir), "backend": backend,
            "versions_written": [v for v, _ in planned], "versions": sorted(int(v) for v in versions),
            "served": newest_version, "config_validated": validated, "options": asdict(opts),
            **({"parity": {str(v): r for v, r in reports.items()}} if parity is not None else {})}


# what the sidecar keeps of a version's parity check (the summary has the whole report)
PARITY_RECORD = ("against", "images", "folder", "max_abs_map_diff", "max_abs_score_diff", "worst_image",
                 "tolerance", "decisions_changed", "ok", "forced")


def _check_rollout(model_dir: Path, backend: str, before: dict, planned: list, parity: ParityCheck,
                   force: bool) -> dict:
    """Each new version against the one before it (the model's newest version, then each new one in turn) on the
    parity images: {version: check_rollout report}. RepositoryError for the first that moves a map or a score
    beyond the tolerance, unless `force`."""
    from ..data.images import read_image, sample_image_files
    from ..errors import DataError
    from ..verify import check_rollout

    if backend == "tensorrt":
        raise RepositoryError(f"--parity compares ONNX versions through ONNX Runtime, and model {model_dir.name!r} "
                              "serves TensorRT plans: compare the ONNX files they were built from (`prn-edge bench "
                              "OLD.onnx NEW.onnx --images DIR` reports their map difference), or add without --parity")
    folder = Path(parity.images)
    try:
        files = sample_image_files(folder, parity.count)
        images = [read_image(f) for f in files]
    except DataError as e:
        raise RepositoryError(f"--parity: {e}") from None
    names = [str(f.relative_to(folder)) for f in files]
    if before:
        last = max(before, key=int)
        previous = (int(last), model_dir / last / "model.onnx", before[last]["artefact"])
        if not previous[1].is_file():
            raise RepositoryError(f"{previous[1]} is missing, so version {last} cannot be compared with: restore it, "
                                  "or add without --parity")
    else:
        previous = None  # a new model: its first version has nothing to be compared with
    reports = {}
    for version, served in planned:
        if previous is not None:
            r = check_rollout(previous[1], served.path, images, names, parity.tolerance, parity.threads)
            r.update(against=previous[0], folder=str(folder), forced=bool(force and not r["ok"]))
            if not r["ok"]:
                what = (f"version {version} ({served.path.name}) does not reproduce version {previous[0]} "
                        f"({previous[2]}) on {r['images']} images of {folder}: worst {r['worst_image']}: anomaly map "
                        f"differs by {r['worst_map_diff']:.2e}, score by {r['worst_score_diff']:.2e} (tolerance "
                        f"{parity.tolerance:.0e}); {r['beyond_tolerance']} of {r['images']} images beyond it")
                if not force:
                    raise RepositoryError(f"{what}. Nothing was written. Roll out the artefact you meant; for a "
                                          "deliberate change (INT8, a retrained model) give --parity-tolerance, or "
                                          "--force to roll it out anyway")
                log.warning("%s; rolled out anyway (--force)", what)
            reports[version] = r
        previous = (version, served.path, served.path.name)
    return reports


def _default_name(served: ServedArtefact) -> str:
    category = decode_metadata(served.props, str(served.path)).get("category") or ""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", category or served.path.stem)


def _existing(model_dir: Path, add: bool, name: str) -> Optional[dict]:
    """The sidecar of the model already there (for an add), or None for a new model."""
    if not model_dir.exists() or not any(model_dir.iterdir()):
        return None
    if not add:
        raise RepositoryError(f"{model_dir} already holds a model; --add writes the artefact as its next version, "
                              "or choose another --name")
    if not sidecar_path(model_dir).is_file():
        raise RepositoryError(f"{model_dir} holds no {sidecar_path(model_dir).name}: it was not written by prn-edge "
                              f"triton-repo, so its config is not ours to change; choose another --name than {name!r}")
    try:
        return read_sidecar(model_dir)
    except ArtefactError as e:
        raise RepositoryError(str(e)) from None


def _options(sidecar: Optional[dict], given: Optional[dict], backend: str,
             served: list[ServedArtefact]) -> ServeOptions:
    known = {f.name for f in fields(ServeOptions)}
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = set(given) - known
    if unknown:
        raise RepositoryError(f"unknown options {sorted(unknown)}; choose from {sorted(known)}")
    values = {k: v for k, v in ((sidecar or {}).get("options") or {}).items() if k in known}
    values.update(given)
    values["preferred_batch"] = tuple(int(b) for b in values.get("preferred_batch") or ())
    opts = ServeOptions(**values)
    limits = [s.max_batch for s in served if s.spec.batch is None and s.max_batch is not None]
    if limits and opts.max_batch > min(limits):  # an engine's optimisation profile ends below the batch asked for
        if "max_batch" in given:
            raise RepositoryError(f"--max-batch {opts.max_batch}: the engine was built for batches up to "
                                  f"{min(limits)}; give {min(limits)} or less, or rebuild it with a larger "
                                  "--batch-profile")
        opts.max_batch = min(limits)
    return opts.validate(backend)


def _check_same_model(s: ServedArtefact, backend: str, reference: tuple, name: str) -> None:
    """Versions of one model share a config: same backend, input and outputs."""
    if s.backend != backend:
        raise RepositoryError(f"{s.path.name} is served by the {s.backend} backend but model {name!r} uses "
                              f"{backend}; all versions of a model share one config: give it another --name")
    spec, map_dims = reference
    if s.spec != spec or tuple(s.map_dims) != map_dims:
        raise RepositoryError(f"{s.path.name} takes {s.spec.height}x{s.spec.width}x{s.spec.channels} "
                              f"{s.spec.channel_order} frames (batch {s.spec.batch or 'dynamic'}), unlike the other "
                              f"versions of model {name!r}; a different input is a different model: give it another "
                              "--name")


def _write_version(model_dir: Path, version: int, s: ServedArtefact) -> None:
    """Fill the version folder beside its final place, then rename it in: a polling server never sees half of it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    if final.exists():
        raise RepositoryError(f"{final} exists but the sidecar does not record version {version}; move it away")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    try:
        if s.backend == "python":
            shutil.copyfile(PYTHON_MODEL, tmp / "model.py")
            shutil.copyfile(s.path, tmp / "model.onnx")
        else:
            shutil.copyfile(s.path, tmp / BACKENDS[s.backend])
        tmp.chmod(0o755)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["write_model", "describe", "config_text", "parse_config", "ServeOptions", "ServedArtefact",
           "ParityCheck", "RepositoryError", "BACKENDS"]

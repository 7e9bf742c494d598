"""Triton Inference Server backend: the Engine contract over tritonclient gRPC, for a model written by
`prn-edge triton-repo` (prn_edge.serve.triton_repo).

    with open_engine("triton://127.0.0.1:8001/coin") as engine:        # the version the server serves
    with open_engine("triton://127.0.0.1:8001/coin/3") as engine:      # exactly version 3, or EngineError
    open_engine("triton://10.0.0.5:8001/coin?timeout_s=0.5&shared_memory=none")

The server computes maps and scores; the decision is made here, as every backend makes it, from the metadata of
the model version that answered: the config's parameters describe it (prn_edge.artefact.triton), or the
repository's sidecar when `repository=` is given. When the server starts serving another version (a rollout), the
first answer from it makes this engine read the config again; a version it cannot describe is an EngineError.
`last_model_version` says which version answered the last call.

Frames go over gRPC, or through POSIX shared memory when the server is on this host (shared_memory="auto": on a
loopback address; "system": always, EngineError if it cannot be set up; "none"). Timeouts and a server that is
gone raise EngineError; the line decides those parts fail-safe. tritonclient is imported when an engine is made.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Union
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from ..artefact import OUTPUT_MAP, OUTPUT_SCORE, InputSpec, MetadataError, ManifestError, decode_metadata
from ..artefact.triton import described_version, read_sidecar, sidecar_parameters
from .base import Engine, EngineError, EngineOptions
from .preprocess import camera_spec_for

log = logging.getLogger(__name__)

SCHEME = "triton"
DEFAULT_PORT = 8001
SHARED_MEMORY = ("auto", "system", "none")
_NOT_INSTALLED = ("tritonclient is not installed, so {url} cannot be reached: pip install '.[triton]' in the "
                  "prn-edge source folder (tritonclient[grpc])")


def is_triton_url(path: Any) -> bool:
    return str(path).startswith(SCHEME + "://")


@dataclass(frozen=True)
class TritonAddress:
    host: str
    port: int
    model: str
    version: str  # "" = whichever version the server serves
    options: dict  # from the query string

    @property
    def grpc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def local(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @classmethod
    def parse(cls, url: str) -> "TritonAddress":
        parts = urlsplit(url)
        hint = "write triton://HOST:PORT/MODEL[/VERSION][?timeout_s=..&shared_memory=auto|system|none]"
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise EngineError(f"{url}: the port is not a number; {hint}") from None
        path = [p for p in parts.path.split("/") if p]
        if parts.scheme != SCHEME or not parts.hostname or not 1 <= len(path) <= 2:
            raise EngineError(f"{url} is not a Triton model address; {hint}")
        version = path[1] if len(path) == 2 else ""
        if version and not version.isdigit():
            raise EngineError(f"{url}: model version {version!r} is not a number; {hint}")
        return cls(parts.hostname, port, path[0], version, dict(parse_qsl(parts.query)))


@dataclass(frozen=True)
class TritonOptions(EngineOptions):
    """timeout_s: the longest one call (or reading the config) may take. shared_memory: "auto" (on a loopback
    address), "system" (always; EngineError if it cannot be set up) or "none". repository: the model repository
    folder on this host, whose sidecar describes each version (needed only when the server serves versions its
    config does not describe). These may also come in the URL's query (triton://host/coin?timeout_s=0.5); a
    keyword option wins over the query. threads is the server's setting and ignored here; channel_order /
    input_hw, if given, must describe the served model's own frames (a uint8 export)."""

    timeout_s: float = 2.0
    shared_memory: str = "auto"
    repository: Optional[Union[str, Path]] = None

    backend: ClassVar[str] = "triton"
    ignored: ClassVar[Mapping[str, str]] = {
        "threads": "threads are the server's setting (instance_group count, --ort-threads of the model)"}
    paths: ClassVar[tuple[str, ...]] = ("repository",)
    QUERY: ClassVar[tuple[str, ...]] = ("timeout_s", "shared_memory", "repository")  # what a URL's query may set

    def validate(self) -> None:
        super().validate()
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            raise EngineError(f"triton backend: timeout_s={self.timeout_s!r}: give a number of seconds > 0")
        if self.shared_memory not in SHARED_MEMORY:
            raise EngineError(f"triton backend: shared_memory={self.shared_memory!r}: choose one of "
                              f"{', '.join(SHARED_MEMORY)}")

    @classmethod
    def for_target(cls, target: str, opts: Mapping[str, Any]) -> "TritonOptions":
        query = TritonAddress.parse(target).options
        unknown = sorted(set(query) - set(cls.QUERY))
        if unknown:
            raise EngineError(f"{target}: unknown options {unknown} in the address; it may set "
                              f"{', '.join(cls.QUERY)}")
        given = dict(query)
        if "timeout_s" in given:
            try:
                given["timeout_s"] = float(given["timeout_s"])
            except ValueError:
                raise EngineError(f"{target}: timeout_s={given['timeout_s']!r} is not a number of seconds") from None
        return cls.from_kwargs({**given, **opts})


class TritonEngine(Engine):
    """A model on a Triton server, reached over gRPC; options: TritonOptions (or the same as keywords, or in the
    URL's query)."""

    backend = "triton"
    Options = TritonOptions

    def __init__(self, url: str, options: Optional[TritonOptions] = None, **opts):
        self.address = addr = TritonAddress.parse(url)
        self.url = url
        o = self.options = (TritonOptions.of(options, opts) if options is not None
                            else TritonOptions.for_target(url, opts))
        self.timeout_s, self.shared_memory = float(o.timeout_s), o.shared_memory
        self.repository = Path(o.repository) if o.repository else None
        try:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise EngineError(_NOT_INSTALLED.format(url=url)) from None
        self._grpc = grpcclient
        self._server_error = InferenceServerException
        self._client = None
        self._regions: dict[str, Any] = {}
        self.last_model_version = ""
        self._call_versions: set = set()
        self._connect()
        try:
            config = self._config()
        finally:
            self._disconnect()
        meta = self._metadata_of(config, addr.version or described_version(config["params"]) or "")
        spec: InputSpec = meta["input_spec"]
        if spec.format != "uint8":
            raise EngineError(f"{url} takes {spec.format} tensors; serve a uint8 (camera-frame) export")
        camera_spec_for(spec, o.channel_order, o.input_hw, o.resize, url)  # a description of other frames: refused
        self._map_dims = config["map_dims"]
        super().__init__(url, meta, spec, max_batch=config["max_batch_size"] or None)

    # ------------------------------------------------------------------ server I/O
    def _connect(self) -> None:
        self._client = self._grpc.InferenceServerClient(self.address.grpc)

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _call(self, what: str, fn, *args, **kwargs):
        """A tritonclient call; its errors (the server gone, a timeout, a refusal) as EngineError."""
        try:
            return fn(*args, client_timeout=self.timeout_s, **kwargs)
        except self._server_error as e:
            status = e.status() or ""
            if "DEADLINE" in status.upper() or "Deadline" in (e.message() or ""):
                cause = f"no answer within timeout_s={self.timeout_s:g} s"
            elif "UNAVAILABLE" in status.upper():
                cause = "the server is not reachable (stopped, restarting, or the address is wrong)"
            else:
                cause = f"{status} {e.message()}".strip()
            raise EngineError(f"Triton {self.url}: {what} failed: {cause}; the line decides such parts fail-safe. "
                              "Check the server (its log, `curl HOST:8000/v2/health/ready`) and the address") from None

    def _config(self) -> dict:
        """The served model's config: its prn_edge parameters, batching and output dims."""
        raw = self._call("reading the model config", self._client.get_model_config, self.address.model,
                         self.address.version, as_json=True)["config"]
        params = {k: v.get("string_value", "") for k, v in (raw.get("parameters") or {}).items()}
        outputs = {o["name"]: [int(d) for d in o.get("dims", [])] for o in raw.get("output", [])}
        batching = int(raw.get("max_batch_size", 0))
        map_dims = tuple(outputs.get(OUTPUT_MAP, []))
        if OUTPUT_SCORE not in outputs or len(map_dims) != (3 if batching else 4):
            raise EngineError(f"Triton model {self.address.model!r} at {self.address.grpc} has outputs "
                              f"{sorted(outputs)}, not a prn_edge model's ({OUTPUT_MAP}, {OUTPUT_SCORE}); write its "
                              "repository with `prn-edge triton-repo`")
        return {"params": params, "max_batch_size": batching, "map_dims": map_dims[-3:]}

    def _metadata_of(self, config: dict, version: str) -> dict:
        """Decision metadata of one model version: from the config's parameters when they describe it, else from the
        repository's sidecar."""
        params = config["params"]
        source = f"Triton model {self.address.model!r} version {version or '?'} at {self.address.grpc}"
        try:
            if described_version(params) != version and self.repository is not None:
                params = sidecar_parameters(read_sidecar(self.repository / self.address.model), version, source)
            elif described_version(params) != version:
                raise EngineError(
                    f"{source}: the model config describes version {described_version(params) or 'none'} (its "
                    "prn_edge parameters); give repository=<the model repository folder> so the sidecar describes "
                    f"version {version}, or write the repository with `prn-edge triton-repo`")
            return decode_metadata(params, source)
        except (MetadataError, ManifestError) as e:
            raise EngineError(str(e)) from None

    def _follow(self, version: str) -> None:
        """The server answered with `version`: make sure the metadata that decides is that version's."""
        self._call_versions.add(version)
        self.last_model_version = version
        if version == self._metadata.get("model_version"):
            return
        if self.address.version:
            raise EngineError(f"{self.url} asks for version {self.address.version} but version {version} answered")
        meta = self._metadata_of(self._config(), version)
        from . import check_gate  # the gate open_engine applied to the first version, for each one that answers

        check_gate(meta, self.url, self.allow_failed_gate)
        if meta["input_spec"] != self._input_spec:
            raise EngineError(f"{self.url}: version {version} takes other frames than version "
                              f"{self._metadata.get('model_version')}; a different input needs a restart")
        log.warning("Triton %s: version %s now answers (was %s); deciding with its metadata", self.url, version,
                    self._metadata.get("model_version"))
        self._metadata = meta

    # ------------------------------------------------------------------ lifecycle
    def _activate(self) -> None:
        self._connect()
        if not self._call("asking whether the model is ready", self._client.is_model_ready, self.address.model,
                          self.address.version):
            raise EngineError(f"Triton {self.url}: model {self.address.model!r} (version "
                              f"{self.address.version or 'latest'}) is not ready on the server; see the server's log")
        if self.shared_memory == "system" or (self.shared_memory == "auto" and self.address.local):
            try:
                self._map_regions()
            except EngineError:
                self._unmap_regions()
                if self.shared_memory == "system":
                    raise
                log.warning("Triton %s: system shared memory is not available, sending frames over gRPC", self.url)

    def _release(self) -> None:
        self._unmap_regions()
        self._disconnect()

    @property
    def uses_shared_memory(self) -> bool:
        return bool(self._regions)

    @property
    def served_artefact(self) -> str:
        """MODEL/VERSION:ARTEFACT@SHA12 of the version whose metadata decides: the one that answered the last call
        (infer() refuses a call that versions answered in parts), before any call the one the config describes."""
        m = self._metadata
        sha = str(m.get("artefact_sha256") or "")[:12]
        return (f"{self.address.model}/{m.get('model_version') or '?'}:{m.get('artefact') or '?'}"
                + (f"@{sha}" if sha else ""))

    def describe(self) -> dict[str, Any]:
        """The server, the model and the version deciding (the one that answered last, else the one its config
        describes), and how frames travel."""
        version = self.last_model_version or self._metadata.get("model_version") or "?"
        return {**super().describe(), "server": self.address.grpc, "model": f"{self.address.model}/{version}",
                "shared_memory": "system" if self._regions else ("none" if self._active else self.shared_memory)}

    def _region_sizes(self) -> dict[str, int]:
        n = self._input_spec.batch or self._max_batch or 1
        s = self._input_spec
        return {s.name: n * s.height * s.width * s.channels, OUTPUT_MAP: n * 4 * int(np.prod(self._map_dims)),
                OUTPUT_SCORE: n * 4}

    def _map_regions(self) -> None:
        import tritonclient.utils.shared_memory as shm

        tag = f"prn_edge_{uuid.uuid4().hex[:12]}"
        for tensor, size in self._region_sizes().items():
            name = f"{tag}_{tensor}"
            try:
                handle = shm.create_shared_memory_region(name, "/" + name, size, create_only=True)
            except Exception as e:
                raise EngineError(f"Triton {self.url}: cannot create shared memory {name} ({e})") from None
            self._regions[tensor] = (name, handle, size)
            self._call("registering shared memory", self._client.register_system_shared_memory, name, "/" + name,
                       size)

    def _unmap_regions(self) -> None:
        import tritonclient.utils.shared_memory as shm

        for name, handle, _ in self._regions.values():
            if self._client is not None:
                try:
                    self._client.unregister_system_shared_memory(name, client_timeout=self.timeout_s)
                except Exception as e:  # the server may be gone; the region is ours to free either way
                    log.debug("unregistering %s: %s", name, e)
            shm.destroy_shared_memory_region(handle)
        self._regions = {}

    # ------------------------------------------------------------------ inference
    def infer(self, frames: np.ndarray):
        self._call_versions = set()
        result = super().infer(frames)
        if len(self._call_versions) > 1:  # a rollout between two chunks of one call: the decisions would mix
            raise EngineError(f"Triton {self.url}: versions {sorted(self._call_versions)} answered parts of one "
                              "call (a new version was rolled out); call again")
        return result

    def _received(self, result, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The outputs of a gRPC answer, checked to hold what their shapes say."""
        why = "an output is missing or of another size"
        try:
            maps, scores = result.as_numpy(OUTPUT_MAP), result.as_numpy(OUTPUT_SCORE)
        except ValueError as e:  # tritonclient reshaping fewer bytes than the shape needs
            maps = scores = None
            why = str(e)
        if maps is None or scores is None or maps.size != n * np.prod(self._map_dims) or scores.size != n:
            raise EngineError(f"Triton {self.url}: the answer lacks output data ({why}); "
                              "a Python-backend stub built against numpy 1.x running under numpy 2 does this: give "
                              "the server's Python backend numpy<2") from None
        return maps, scores

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        grpc = self._grpc
        n = len(frames)
        shape = list(frames.shape)
        t0 = time.perf_counter()
        inp = grpc.InferInput(self._input_spec.name, shape, "UINT8")
        outputs = [grpc.InferRequestedOutput(OUTPUT_MAP), grpc.InferRequestedOutput(OUTPUT_SCORE)]
        if self._regions:
            import tritonclient.utils.shared_memory as shm

            name, handle, _ = self._regions[self._input_spec.name]
            shm.set_shared_memory_region(handle, [frames])
            inp.set_shared_memory(name, frames.nbytes)
            for out in outputs:
                region, _, size = self._regions[out.name()]
                out.set_shared_memory(region, size)
        else:
            inp.set_data_from_numpy(frames)
        t1 = time.perf_counter()
        result = self._call("inference", self._client.infer, self.address.model, [inp],
                            model_version=self.address.version, outputs=outputs)
        t2 = time.perf_counter()
        if self._regions:
            maps = np.array(shm.get_contents_as_numpy(self._regions[OUTPUT_MAP][1], np.float32,
                                                      (n,) + tuple(self._map_dims)))
            scores = np.array(shm.get_contents_as_numpy(self._regions[OUTPUT_SCORE][1], np.float32, (n,)))
        else:
            maps, scores = self._received(result, n)
        t3 = time.perf_counter()
        timings["h2d"] += t1 - t0
        timings["compute"] += t2 - t1
        timings["d2h"] += t3 - t2
        self._follow(result.get_response().model_version)
        return maps.reshape((n,) + tuple(self._map_dims))[:, 0], scores.reshape(n)

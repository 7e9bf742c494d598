"""The tritonserver binary of the nvidia-pytriton wheel, started directly on this host (tests, benchmarks, a
single-host setup without a Triton container).

    with LocalTritonServer("model_repository") as server:       # listens on 127.0.0.1 only, on free ports
        engine = open_engine(server.url("coin"))                 # triton://127.0.0.1:PORT/coin

The wheel ships the server, the Python backend and its stubs, but no onnxruntime or TensorRT backend: serve
prn_edge artefacts through the Python-backend model (`prn-edge triton-repo --python-backend`). PyTriton's own
Python wrapper is not used (it failed here on Python 3.10 and 3.11); the binary is started directly: a backend
directory with the Python backend and the stub for this Python, the wheel's bundled libraries on LD_LIBRARY_PATH.
The stub is built against numpy 1.x (nvidia-pytriton pins numpy<2), so the model it runs needs a site-packages of
numpy<2 and onnxruntime of its own. The server binds 0.0.0.0 unless told otherwise; here every endpoint is bound
to `host`.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import PrnEdgeError


# Where the server and the stub's packages are looked for (after an explicit argument and before the defaults):
SITE_ENV = "PRN_EDGE_TRITONSERVER_SITE"  # holds pytriton/ (pip install --no-deps --target DIR nvidia-pytriton)
PYTHONPATH_ENV = "PRN_EDGE_TRITON_PYTHONPATH"  # site-packages with numpy<2 and onnxruntime for the Python backend
# What `make` installs beside the venv: nvidia-pytriton pins numpy<2, so it cannot live in the venv itself.
MAKE_SITE = Path(sys.prefix) / "triton"
MAKE_STUB_SITE = Path(sys.prefix) / "triton-stub"


class ServerError(PrnEdgeError):
    """The local tritonserver cannot be found, started or reached; the message says why and what to do."""


@dataclass(frozen=True)
class TritonBinary:
    server: Path  # bin/tritonserver
    python_backend: Path  # backends/python (libtriton_python.so, triton_python_backend_utils.py)
    stub: Path  # the Python-backend stub for this Python version
    libs: Path  # the wheel's bundled shared libraries


def find_tritonserver(site: Optional[str | Path] = None) -> TritonBinary:
    """The server of an nvidia-pytriton install: in `site`, else $PRN_EDGE_TRITONSERVER_SITE, else where `pytriton`
    imports from (found without importing it), else `make`'s .venv/triton."""
    if site is None and os.environ.get(SITE_ENV):
        site = os.environ[SITE_ENV]
    if site is None:
        spec = importlib.util.find_spec("pytriton")
        site = (Path(list(spec.submodule_search_locations)[0]).parent if spec and spec.submodule_search_locations
                else MAKE_SITE)
    root = Path(site) / "pytriton" / "tritonserver"
    if not root.is_dir():
        raise ServerError(f"no tritonserver in {site}: pip install --no-deps --target DIR nvidia-pytriton (x86_64 or "
                          f"aarch64 Linux) and set {SITE_ENV}=DIR, or run a Triton container and point the engine "
                          "at it")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary = TritonBinary(root / "bin" / "tritonserver", root / "backends" / "python",
                          root / "python_backend_stubs" / version / "triton_python_backend_stub",
                          Path(site) / "nvidia_pytriton.libs")
    if not binary.server.is_file():
        raise ServerError(f"{binary.server} is missing: the nvidia-pytriton install is incomplete; reinstall it")
    if not binary.stub.is_file():
        have = sorted(p.name for p in (root / "python_backend_stubs").iterdir())
        raise ServerError(f"nvidia-pytriton has no Python-backend stub for Python {version} (it has {have}); run "
                          "with one of those Python versions")
    return binary


def stub_python_paths() -> list[str]:
    """site-packages for the Python-backend model: $PRN_EDGE_TRITON_PYTHONPATH (os.pathsep-separated), else `make`'s
    .venv/triton-stub, else the folders this Python imports numpy and onnxruntime from."""
    given = os.environ.get(PYTHONPATH_ENV)
    if given:
        return [p for p in given.split(os.pathsep) if p]
    if MAKE_STUB_SITE.is_dir():
        return [str(MAKE_STUB_SITE)]
    out = []
    for name in ("numpy", "onnxruntime"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            where = str(Path(spec.origin).parent.parent)
            if where not in out:
                out.append(where)
    return out


def check_stub_numpy(paths: Sequence[str]) -> None:
    """The wheel's Python-backend stub is built against numpy 1.x (nvidia-pytriton requires numpy<2): under numpy 2
    it returns outputs without data. Refuse that before the server starts."""
    for path in paths:
        found = sorted(Path(path).glob("numpy-*.dist-info"))
        if found:
            version = found[-1].name[len("numpy-"):-len(".dist-info")]
            if int(version.split(".")[0]) >= 2:
                raise ServerError(
                    f"numpy {version} in {path} is what the Python-backend model would import, but the stub of "
                    "nvidia-pytriton is built against numpy 1.x and returns empty outputs under numpy 2. Give it a "
                    f"site-packages of its own: pip install --target DIR 'numpy<2' onnxruntime; then "
                    f"{PYTHONPATH_ENV}=DIR (or LocalTritonServer(python_paths=[DIR]))")
            return


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalTritonServer:
    """tritonserver on `host` (default 127.0.0.1), serving `repository`; a context manager that starts it, waits until
    the server and every model are ready, and stops it (and its Python-backend stubs).

    model_control: "none" (load everything at start) or "explicit" (load everything at start, then load/unload
    through the API: how a new version is rolled out). server_site: where nvidia-pytriton is installed (default:
    find_tritonserver's search). python_paths: site-packages for the Python-backend model (numpy<2 and onnxruntime;
    default: stub_python_paths()).
    """

    def __init__(self, repository: str | Path, host: str = "127.0.0.1", model_control: str = "none",
                 server_site: Optional[str | Path] = None, python_paths: Optional[Sequence[str]] = None,
                 startup_timeout_s: float = 90.0,
                 exit_timeout_s: int = 3, extra_args: Sequence[str] = ()):
        if model_control not in ("none", "explicit"):
            raise ServerError(f"model_control={model_control!r}: choose none or explicit")
        self.repository = Path(repository).resolve()
        self.host = host
        self.model_control = model_control
        self.server_site = server_site
        self.python_paths = list(python_paths) if python_paths is not None else stub_python_paths()
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args)
        self.grpc_port = self.http_port = self.metrics_port = 0
        self._proc: Optional[subprocess.Popen] = None
        self._workdir: Optional[Path] = None
        self.log_path: Optional[Path] = None

    # ------------------------------------------------------------------ addresses
    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def url(self, model: str, version: Optional[int] = None) -> str:
        """The engine URL of a model served here: triton://HOST:GRPC_PORT/MODEL[/VERSION]."""
        return f"triton://{self.grpc_address}/{model}" + (f"/{version}" if version else "")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalTritonServer":
        if self._proc is not None:
            return self
        binary = find_tritonserver(self.server_site)
        check_stub_numpy(self.python_paths)
        self._workdir = Path(tempfile.mkdtemp(prefix="prn_edge_triton_"))
        backend = self._workdir / "backends" / "python"
        backend.mkdir(parents=True)
        for f in binary.python_backend.iterdir():
            if f.is_file():
                shutil.copy2(f, backend / f.name)
        shutil.copy2(binary.stub, backend / binary.stub.name)
        self.grpc_port, self.http_port, self.metrics_port = (free_port(self.host) for _ in range(3))
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(binary.libs), env.get("LD_LIBRARY_PATH")) if p)
        env["PYTHONPATH"] = os.pathsep.join(self.python_paths)
        cmd = [str(binary.server), f"--model-repository={self.repository}",
               f"--backend-directory={self._workdir / 'backends'}", f"--model-control-mode={self.model_control}",
               f"--http-address={self.host}", f"--http-port={self.http_port}",
               f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
               f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
               f"--exit-timeout-secs={self.exit_timeout_s}", "--log-verbose=0", *self.extra_args]
        if self.model_control == "explicit":
            cmd.append("--load-model=*")
        self.log_path = self._workdir / "tritonserver.log"
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self._workdir,
                                          start_new_session=True)  # its own group: the stubs stop with it
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.host}:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self._proc.returncode} while starting:\n"
                                  f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerError(f"tritonserver was not ready within {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 12) -> str:
        """The server's error lines (a model that failed to load says why there) and the end of its log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines() if self.log_path else []
        except OSError:
            return ""
        errors = [line for line in text if re.match(r"^E\d{4} ", line)]
        return "\n".join(line[:600] for line in errors + ["..."] + text[-lines:])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (it finishes requests in flight within exit_timeout_s), SIGKILL after that or at
        once with kill=True (a crash, for tests). Only the process group this object started is signalled."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            self._signal(proc, signal.SIGKILL)  # stubs left behind by a killed server
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self.log_path = None

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

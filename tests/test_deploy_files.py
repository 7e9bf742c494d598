"""The deployment files we cannot build here (no Jetson, no Docker daemon): checked for the structure an
integrator relies on, the way hadolint and `docker compose config` would complain."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_jetson_dockerfile():
    ins = _instructions(ROOT / "deploy" / "jetson" / "Dockerfile")
    keys = [k for k, _ in ins]
    assert keys[0] == "FROM" and re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", ins[0][1])  # pinned tag
    runs = " ".join(v for k, v in ins if k == "RUN")
    assert "apt-get update" in runs and "rm -rf /var/lib/apt/lists" in runs and "--no-install-recommends" in runs
    assert "--system-site-packages" in runs and "constraints/jetpack6.txt" in runs and "[jetson,line]" in runs
    # what the appliance needs to run and build .engine files beside JetPack's TensorRT
    import configparser

    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    jetson = extras["options.extras_require"]["jetson"]
    assert all(p in jetson for p in ("onnxruntime-gpu", "cuda-python", "onnx>=")) and "tensorrt" not in jetson
    assert "torch" not in runs and "[train" not in runs  # the appliance installs the runtime only
    user = [v for k, v in ins if k == "USER"]
    last_run = max(i for i, k in enumerate(keys) if k == "RUN")
    assert user and user[-1] not in ("root", "0") and keys.index("USER") > last_run  # the line never runs as root
    assert dict(ins)["STOPSIGNAL"] == "SIGTERM" and "/healthz" in dict(ins)["HEALTHCHECK"]
    entry = yaml.safe_load(dict(ins)["ENTRYPOINT"])  # exec form (JSON array): signals reach prn-edge itself
    assert isinstance(entry, list) and entry[0].endswith("/prn-edge") and "run" in entry


def test_jetson_compose():
    svc = yaml.safe_load((ROOT / "deploy" / "jetson" / "compose.yaml").read_text())["services"]["prn-edge"]
    assert svc["runtime"] == "nvidia" and svc["stop_signal"] == "SIGTERM" and svc["restart"] == "unless-stopped"
    mounts = {v.split(":")[1]: v.split(":")[2:] for v in svc["volumes"]}
    assert mounts["/etc/prn-edge"] == ["ro"] and mounts["/opt/gentl"] == ["ro"] and "/var/lib/prn-edge" in mounts
    assert svc["environment"]["GENICAM_GENTL64_PATH"] == "/opt/gentl"
    assert any("gpiochip" in d for d in svc["devices"])


def test_jetpack_constraints_keep_what_jetpack_provides():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "constraints" / "jetpack6.txt").read_text().splitlines()]
    pins = {re.split(r"[<>=!]", ln)[0]: ln for ln in lines if ln}
    assert pins["tensorrt"] == "tensorrt<0" and pins["onnxruntime"] == "onnxruntime<0"
    assert "<13" in pins["cuda-python"] and pins["numpy"] == "numpy<2"

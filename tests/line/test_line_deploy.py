"""The shipped Grafana dashboard, Prometheus alert rules and scrape configuration name only metrics (and labels)
that are really served: prn_line_* against the /metrics text of a line that ran; Triton's nv_* against the
/metrics of the real tritonserver (nvidia-pytriton wheel) where it runs here, else against a recorded scrape of it
(tests/helpers/triton_metrics.prom, its source named in its header), which the real server also checks."""
from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from prn_edge.line import Budget, Line, LoopOptions
from prn_edge.sim.doubles import RecordingOutput, ScriptedEngine
from prn_edge.line.monitor import MetricsEndpoint
from prn_edge.line.sources import SyntheticConveyor
from tests.helpers.triton import server_skip_reason, tiny_artefact

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RECORDED_TRITON = Path(__file__).resolve().parents[1] / "helpers" / "triton_metrics.prom"
NAME = re.compile(r"\b((?:prn_line|nv)_[a-z_]+)\b")
BY = re.compile(r"\bby \(([^)]*)\)")
SAMPLE = re.compile(r"^((?:prn_line|nv)_[a-z_]+)(\{([^}]*)\})?\s")


def _exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "prn-edge-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "prn-edge-lines.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return exprs


def served_series(text: str) -> dict[str, set]:
    """metric name -> the label names its samples carry, from Prometheus text."""
    served: dict[str, set] = {}
    for row in text.splitlines():
        m = SAMPLE.match(row)
        if m:
            labels = {kv.split("=")[0] for kv in (m.group(3) or "").split(",") if kv}
            served.setdefault(m.group(1), set()).update(labels)
    return served


def _scrape(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


@pytest.fixture(scope="module")
def line_series(demo_category) -> dict[str, set]:
    line = Line(SyntheticConveyor(demo_category, rate_hz=100, parts=30), ScriptedEngine(64, 64, 3),
                [RecordingOutput()], Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1), name="cam0")
    line.run()
    endpoint = MetricsEndpoint([line.metrics], 0)
    try:
        return served_series(_scrape(f"http://127.0.0.1:{endpoint.port}/metrics"))
    finally:
        endpoint.close()


@pytest.fixture(scope="module")
def triton_series(tmp_path_factory) -> tuple[dict[str, set], str]:
    """Triton's series from the real server when it runs here (one model, a few requests), else the record."""
    if server_skip_reason() is not None:
        return served_series(RECORDED_TRITON.read_text()), f"recorded in {RECORDED_TRITON.name}"
    from prn_edge.runtime import open_engine
    from prn_edge.serve.triton_repo import write_model
    from prn_edge.serve.triton_server import LocalTritonServer

    repo = tmp_path_factory.mktemp("triton_metrics_repo")
    write_model([tiny_artefact(tmp_path_factory.getbasetemp())], repo, name="coin", python_backend=True)
    with LocalTritonServer(repo) as server:
        with open_engine(server.url("coin")) as engine:
            for _ in range(3):
                engine.infer(np.zeros((2,) + engine.input_spec.frame_shape, np.uint8))
        return served_series(_scrape(server.metrics_url)), "scraped from the real tritonserver"


def test_every_metric_and_label_the_dashboard_and_alerts_use_is_served(line_series, triton_series):
    triton, source = triton_series
    served = {**line_series, **triton}
    exprs = _exprs()
    assert len(exprs) >= 20
    assert any("nv_inference_queue_duration_us" in e for e in exprs)  # Triton's own endpoint is on the dashboard
    for expr in exprs:
        names = NAME.findall(expr)
        assert names, expr
        for name in names:
            where = source if name.startswith("nv_") else "served by the line"
            assert name in served, f"{name} (in {expr!r}) is not {where}; those are: {sorted(served)}"
            for group in BY.findall(expr):
                for label in (x.strip() for x in group.split(",")):
                    assert label == "le" or label in served[name], f"label {label} of {name} in {expr!r} ({where})"


def test_the_recorded_triton_metrics_match_the_real_server(triton_series):
    triton, source = triton_series
    if source.startswith("recorded"):
        pytest.skip(f"the real tritonserver cannot run here ({server_skip_reason()}): the record stands alone")
    recorded = served_series(RECORDED_TRITON.read_text())
    for name, labels in recorded.items():
        assert name in triton and labels <= triton[name], f"{name} {sorted(labels)} is not served as recorded"


def test_the_scrape_config_has_the_jobs_the_dashboard_and_alerts_read():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert {"prn-edge", "triton"} <= set(jobs)
    for job in jobs.values():
        for target in (t for s in job["static_configs"] for t in s["targets"]):
            assert re.fullmatch(r"[\w.-]+:\d+", target), target
    assert jobs["triton"]["static_configs"][0]["targets"][0].endswith(":8002")  # tritonserver's metrics port
    named = set(re.findall(r'job="([^"]+)"', " ".join(_exprs())))
    assert named <= set(jobs), f"alerts or panels name jobs {sorted(named - set(jobs))} the scrape config lacks"
    for rules in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rules).is_file()
    interval = int(config["global"]["scrape_interval"].rstrip("s"))
    assert interval <= 10  # the heartbeat alert looks at 30 s of samples

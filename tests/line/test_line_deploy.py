"""The shipped Grafana dashboard and Prometheus alert rules name only metrics (and labels) a line really serves:
checked against the /metrics text of a line that ran."""
from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import yaml

from prn_edge.line import Budget, Line, LoopOptions
from prn_edge.sim.doubles import RecordingOutput, ScriptedEngine
from prn_edge.line.monitor import MetricsEndpoint
from prn_edge.line.sources import SyntheticConveyor

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"\b(prn_line_[a-z_]+)\b")
BY = re.compile(r"\bby \(([^)]*)\)")


def _exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "prn-edge-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "prn-edge-lines.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return exprs


def test_every_metric_and_label_the_dashboard_and_alerts_use_is_served(demo_category):
    line = Line(SyntheticConveyor(demo_category, rate_hz=100, parts=30), ScriptedEngine(64, 64, 3),
                [RecordingOutput()], Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1), name="cam0")
    line.run()
    endpoint = MetricsEndpoint([line.metrics], 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5).read().decode()
    finally:
        endpoint.close()
    served: dict[str, set] = {}
    for row in text.splitlines():
        m = re.match(r"^(prn_line_[a-z_]+)(\{([^}]*)\})?\s", row)
        if m:
            labels = {kv.split("=")[0] for kv in (m.group(3) or "").split(",") if kv}
            served.setdefault(m.group(1), set()).update(labels)
    exprs = _exprs()
    assert len(exprs) >= 15
    for expr in exprs:
        names = NAME.findall(expr)
        assert names, expr
        for name in names:
            assert name in served, f"{name} (in {expr!r}) is not served; served: {sorted(served)}"
            for group in BY.findall(expr):
                for label in (x.strip() for x in group.split(",")):
                    assert label == "le" or label in served[name], f"label {label} of {name} in {expr!r}"

"""Monitoring: a private Prometheus registry per line served on 127.0.0.1, evidence in a ring buffer with a
quota, and the one-line status."""
from __future__ import annotations

import io
import os
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from prn_edge.line.decision import Decision, Part
from prn_edge.line.monitor import EvidenceStore, LineMetrics, MetricsEndpoint, StatusLine, heat_overlay
from prn_edge.line.sources import Frame


def reject(seq: int, cause: str = "model", image=True) -> Part:
    now = time.monotonic()
    img = np.random.default_rng(seq).integers(0, 255, (48, 64, 3), dtype=np.uint8) if image else None
    p = Part(seq, now, now, now, frame=Frame(img, seq, now, label=1, defect="crack"), frame_id=seq)
    p.decision = Decision(seq, "reject", cause, now, 0.9, 0.8)
    p.amap = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    p.times["inference"] = 0.004
    return p


def test_metrics_endpoint_on_loopback_with_a_private_registry():
    a, b = LineMetrics("a"), LineMetrics("b")  # two lines in one process do not collide
    p = reject(0, "camera_timeout")
    a.parts.inc()
    a.on_final(p)
    a.dropped_frames.labels("stale").inc(2)
    port = a.serve(0)
    try:
        assert a._server.bind == "127.0.0.1"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        a.close()
    assert 'prn_line_parts_total{line="a"} 1.0' in text
    assert 'prn_line_fail_safe_rejects_total{cause="camera_timeout",line="a"} 1.0' in text
    assert 'prn_line_dropped_frames_total{line="a",reason="stale"} 2.0' in text
    assert 'prn_line_stage_seconds_bucket{le="0.005",line="a",stage="inference"} 1.0' in text
    assert b.value("prn_line_parts_total") == 0
    assert a.summary()["fail_safe"] == {"camera_timeout": 1} and a.summary()["rejects"] == 1


def test_one_endpoint_serves_every_line_with_its_label_and_a_health_check():
    a, b = LineMetrics("cam0"), LineMetrics("cam1")
    a.parts.inc(3)
    b.parts.inc(5)
    a.healthy.set(1)
    endpoint = MetricsEndpoint([a, b], 0)
    url = f"http://127.0.0.1:{endpoint.port}"
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'prn_line_parts_total{line="cam0"} 3.0' in text and 'prn_line_parts_total{line="cam1"} 5.0' in text
        assert text.count("# TYPE prn_line_parts_total counter") == 1  # one family, one series per line
        with pytest.raises(urllib.error.HTTPError) as e:  # cam1 is not healthy
            urllib.request.urlopen(url + "/healthz", timeout=5)
        assert e.value.code == 503 and json.loads(e.value.read()) == {"healthy": False,
                                                                      "lines": {"cam0": True, "cam1": False}}
        b.healthy.set(1)
        ok = urllib.request.urlopen(url + "/healthz", timeout=5)
        assert ok.status == 200 and json.loads(ok.read())["healthy"] is True
    finally:
        endpoint.close()


def test_evidence_ring_buffer_keeps_the_newest_within_quota(tmp_path):
    one = 0
    with EvidenceStore(tmp_path / "ev", quota_bytes=10 << 20) as store:
        store.submit(reject(0))
    one = sum(f.stat().st_size for f in (tmp_path / "ev").iterdir())
    assert one > 0
    quota = int(one * 3.5)
    with EvidenceStore(tmp_path / "ev", quota_bytes=quota) as store:  # picks up what is on disk
        for i in range(1, 10):
            p = reject(i)
            assert store.wants(p)
            store.submit(p)
            time.sleep(0.01)  # the writer thread keeps up; the backlog is bounded anyway
    files = sorted((tmp_path / "ev").iterdir())
    assert sum(f.stat().st_size for f in files) <= quota
    kept = sorted(json.loads(f.read_text())["seq"] for f in files if f.suffix == ".json")
    assert kept == list(range(10 - len(kept), 10)) and 2 <= len(kept) <= 3
    assert len([f for f in files if f.name.endswith("_overlay.png")]) == len(kept)
    info = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert info["cause"] == "model" and info["defect"] == "crack" and info["stage_seconds"]["inference"] == 0.004


def test_evidence_skips_fail_safe_and_imageless_parts_unless_asked(tmp_path):
    store = EvidenceStore(tmp_path, fail_safe=False)
    assert not store.wants(reject(1, "engine_error"))
    assert EvidenceStore(tmp_path, fail_safe=True).wants(reject(1, "engine_error"))
    assert not EvidenceStore(tmp_path, fail_safe=True).wants(reject(1, "missing_frame", image=False))


def test_overlay_and_status_line():
    img = np.zeros((10, 20, 1), np.uint8)
    ov = heat_overlay(img, np.ones((5, 5), np.float32))
    assert ov.shape == (10, 20, 3) and ov[..., 0].max() > 0  # hot = red in RGB
    out = io.StringIO()
    status = StatusLine(out, every_s=0.0, force=True)
    summary = {"parts": 10, "rejects": 3, "fail_safe": {"camera_timeout": 1}, "deadline_misses": 0}
    status.update(StatusLine.render(summary, 2.0, 4.2, True, 1))
    status.update(StatusLine.render(summary, 2.0, 4.2, False, 1), final=True)
    text = out.getvalue()
    assert text.startswith("\rparts 10  5.0/s  rejects 3  fail-safe 1") and "ALARM" in text and text.endswith("\n")
    assert StatusLine(io.StringIO()).enabled is False  # not a terminal: silent


@pytest.fixture()
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs): full-disk behaviour without filling the machine's disk."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}): needs root or CAP_SYS_ADMIN")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def big_reject(seq: int) -> Part:
    p = reject(seq)
    img = np.random.default_rng(seq).integers(0, 255, (256, 256, 3), dtype=np.uint8)  # ~200 kB as PNG
    p.frame = Frame(img, seq, p.t_capture, label=1, defect="crack")
    p.amap = None
    return p


def _free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _sets(folder) -> tuple[list[int], list[str]]:
    names = sorted(f.name for f in folder.iterdir())
    kept = sorted(json.loads((folder / n).read_text())["seq"] for n in names if n.endswith(".json"))
    return kept, names


def test_evidence_keeps_the_disk_reserve_free_by_dropping_the_oldest(small_disk):
    reserve = 1 << 20
    with EvidenceStore(small_disk, quota_bytes=100 << 20, reserve_bytes=reserve) as store:
        for i in range(12):
            store.submit(big_reject(i))
            time.sleep(0.05)
    kept, names = _sets(small_disk)
    assert _free(small_disk) >= reserve and store.failed == {"reserve": 0, "write": 0}
    assert kept == list(range(12 - len(kept), 12)) and 2 <= len(kept) < 12  # the newest, oldest evicted
    assert len(names) == 3 * len(kept)  # complete sets only


def test_evidence_on_a_full_disk_fails_counted_leaving_no_partial_sets(small_disk):
    with open(small_disk / "filler", "wb") as f:  # something else filled the disk up to 300 kB before its end
        f.write(b"\0" * ((2 << 20) - (300 << 10)))
    metrics = LineMetrics("ev")
    with EvidenceStore(small_disk, reserve_bytes=1 << 20, metrics=metrics) as store:
        store.submit(big_reject(0))
        time.sleep(0.2)
    assert store.failed == {"reserve": 1, "write": 0} and store.written == 0
    assert metrics.value("prn_line_evidence_failed_total", reason="reserve") == 1
    with EvidenceStore(small_disk, reserve_bytes=0, metrics=metrics) as store:
        # Another writer takes the space between the free-space check and the write: the check is told there is
        # room (the only pretence here), the real file system answers ENOSPC part-way through a set.
        store._free = lambda: 1 << 40
        for i in range(1, 5):
            store.submit(big_reject(i))
            time.sleep(0.05)
    assert store.failed["write"] >= 1 and store.written + store.failed["write"] == 4
    kept, names = _sets(small_disk)
    assert len(kept) == store.written and len(names) == 3 * len(kept) + 1  # + the filler: no partial set, no .part
    assert metrics.value("prn_line_evidence_failed_total", reason="write") == store.failed["write"]


def test_score_drift_of_good_parts_raises_an_alarm_once(caplog):
    m = LineMetrics("cam")

    def good(seq: int, normalized: float) -> Part:
        p = Part(seq, 0.0, 0.0, 0.0)
        p.decision = Decision(seq, "good", "model", 0.0, 1.0, normalized)
        return p

    rng = np.random.default_rng(0)
    for i in range(400):  # steady: scores around 0.2
        m.on_final(good(i, 0.2 + 0.02 * rng.standard_normal()))
    assert abs(m.value("prn_line_score_drift")) < 0.02 and m.value("prn_line_score_drift_alarms_total") == 0
    for i in range(400, 1200):  # the lighting changed: good parts now score around 0.4
        m.on_final(good(i, 0.4 + 0.02 * rng.standard_normal()))
    assert 0.18 < m.value("prn_line_score_drift") < 0.22
    assert m.value("prn_line_score_drift_alarms_total") == 1  # one alarm, not one per part
    assert "ALARM score drift on line cam" in caplog.text
    assert m.value("prn_line_normalized_score_count") == 1200

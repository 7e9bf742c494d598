import json

from prn_edge.demo import run_demo


def test_demo_runs_the_chain_and_reuses_its_model(tmp_path):
    logs = []
    res = run_demo(tmp_path, category="coin", steps=4, variant="prn-tiny", parts=20, rate_hz=20, log=logs.append)
    assert res["category"] == "coin" and res["n_test"] == 30 + 5 * 12
    assert (tmp_path / "eval" / "coin.json").is_file() and any((tmp_path / "eval" / "overlays").iterdir())
    assert json.loads((tmp_path / "eval" / "coin.json").read_text())["per_type"]["hole"]["seen"] is False
    line = res["line"]
    gt = line["ground_truth"]
    assert line["undecided"] == 0 and gt["parts"] == 20
    assert gt["true_rejects"] + gt["missed_defects"] == gt["defective"] > 0
    # every reject reached the PLC, a real Modbus server on loopback, and the heartbeat ran
    assert line["plc"]["reject_commands"] == line["rejects"] and line["plc"]["heartbeats"] > 0
    assert "| true rejects |" in "\n".join(logs)
    logs.clear()
    run_demo(tmp_path, category="coin", steps=4, variant="prn-tiny", parts=5, rate_hz=20, log=logs.append)
    assert any("reusing the demo dataset" in m for m in logs) and any("reusing" in m and ".pt" in m for m in logs)

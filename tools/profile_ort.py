#!/usr/bin/env python
"""Where an ONNX artefact's time goes in ONNX Runtime (CPU): per stage of PRN and per operator type, from ONNX
Runtime's own node profiler, for FP32 and INT8 (Q/DQ) side by side.

    python tools/profile_ort.py fp32=runs/coin.fp32.onnx int8=calibration/coin-cpu/model.int8.onnx \
        [--threads 2] [--iters 30] [--json runs/profile.json]

Stages come from the exported node names: normalize (the input's Sub/Div), encoder, prototypes (search and
residual), inputs (the head's projections), msa (multi-size attention), fusion, decoder, distance (prototype
distance map), tail (sigmoid, top-k score, the rest at top level). Q/DQ nodes that ONNX Runtime did not fuse into
an integer kernel are their own stage ("unfused Q/DQ"): their time is what the Q/DQ layout costs. Per model it also
says which compute nodes run in float (Conv, MatMul) and which in int8 (QLinearConv, MatMulInteger, ...).
Each model is timed in turns with the others (--rounds) on a machine that may be shared; the node times are
the profiler's (they add up to less than the run: the gaps are the executor's own work).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QDQ = {"QuantizeLinear", "DequantizeLinear"}
INT8_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul",
            "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearSoftmax",
            "DynamicQuantizeLinear", "MatMulIntegerToFloat", "QGemm", "QLinearLeakyRelu"}
FLOAT_COMPUTE = {"Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "NhwcFusedConv"}


def stage_of(node: str, op: str) -> str:
    """PRN stage of a node of the (optimized) graph, from its exported name."""
    if op in QDQ:
        return "unfused Q/DQ"
    name = node.strip("/")
    first = re.sub(r"\.\d+$", "", name.split("/")[0])
    if first == "encoder" and re.match(r"encoder/(Sub|Div)(_\d+)?($|_)", name):
        return "normalize"
    if first in ("encoder", "prototypes", "inputs", "msa", "fusion", "decoder", "distance"):
        return first
    return "tail"


def profile(path: Path, x: np.ndarray, threads: int, iters: int, warmup: int = 5) -> dict:
    """Mean per-run node times (ms) of `path` on input x, by node, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "p")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(warmup + iters):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-iters:]
    start = runs[0][0]
    nodes: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        n = nodes.setdefault(node, {"op": op, "ms": 0.0})
        n["ms"] += e["dur"] / 1e3 / iters
    return {"run_ms": float(np.median([(b - a) / 1e3 for a, b in runs])), "nodes": nodes}


def summarize(p: dict) -> dict:
    stages, ops, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    for node, n in p["nodes"].items():
        stages[stage_of(node, n["op"])] += n["ms"]
        ops[n["op"]] += n["ms"]
        counts[n["op"]] += 1
    return {"run_ms": p["run_ms"], "nodes_ms": sum(n["ms"] for n in p["nodes"].values()),
            "stages_ms": dict(sorted(stages.items(), key=lambda kv: -kv[1])),
            "ops_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1])), "op_counts": dict(counts),
            "float_compute_nodes": sum(c for o, c in counts.items() if o in FLOAT_COMPUTE),
            "int8_compute_nodes": sum(c for o, c in counts.items() if o in INT8_OPS),
            "unfused_qdq_nodes": sum(c for o, c in counts.items() if o in QDQ),
            "float_compute_by_stage": _float_by_stage(p)}


def _float_by_stage(p: dict) -> dict:
    out: dict[str, int] = defaultdict(int)
    for node, n in p["nodes"].items():
        if n["op"] in FLOAT_COMPUTE:
            out[stage_of(node, n["op"])] += 1
    return dict(out)


def model_input(path: Path) -> np.ndarray:
    from prn_edge.artefact import read_metadata
    from prn_edge.data.synth.textures import builtin_textures
    from prn_edge.runtime.preprocess import frames_to_model_input, rgb_to_frames

    spec = read_metadata(path)["input_spec"]
    frames = rgb_to_frames(builtin_textures(256)[:1], spec)
    return frames if spec.format == "uint8" else frames_to_model_input(frames, spec)


def table(results: dict) -> str:
    labels = list(results)
    stages = sorted({s for r in results.values() for s in r["stages_ms"]},
                    key=lambda s: -max(r["stages_ms"].get(s, 0) for r in results.values()))
    rows = ["| stage | " + " | ".join(f"{l} ms" for l in labels) + " |", "|---|" + "---:|" * len(labels)]
    for s in stages:
        rows.append(f"| {s} | " + " | ".join(f"{results[l]['stages_ms'].get(s, 0):.2f}" for l in labels) + " |")
    rows.append("| nodes total | " + " | ".join(f"{results[l]['nodes_ms']:.2f}" for l in labels) + " |")
    rows.append("| run (median) | " + " | ".join(f"{results[l]['run_ms']:.2f}" for l in labels) + " |")
    rows.append("| float / int8 compute nodes, unfused Q/DQ | " + " | ".join(
        f"{results[l]['float_compute_nodes']} / {results[l]['int8_compute_nodes']}, {results[l]['unfused_qdq_nodes']}"
        for l in labels) + " |")
    ops = sorted({o for r in results.values() for o in list(r["ops_ms"])[:10]},
                 key=lambda o: -max(r["ops_ms"].get(o, 0) for r in results.values()))
    rows += ["", "| op type | " + " | ".join(f"{l} ms (n)" for l in labels) + " |", "|---|" + "---:|" * len(labels)]
    for o in ops:
        rows.append(f"| {o} | " + " | ".join(f"{results[l]['ops_ms'].get(o, 0):.2f} ({results[l]['op_counts'].get(o, 0)})"
                                             for l in labels) + " |")
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="LABEL=PATH.onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = dict(m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.models)
    per_round: dict[str, list] = defaultdict(list)
    for _ in range(args.rounds):  # turns, so a shared machine's drift hits every model alike
        for label, path in models.items():
            per_round[label].append(profile(Path(path), model_input(Path(path)), args.threads, args.iters))
    results = {}
    for label, rounds in per_round.items():
        merged = {"run_ms": float(np.median([r["run_ms"] for r in rounds])), "nodes": {}}
        for node in rounds[0]["nodes"]:  # the median round's time per node
            merged["nodes"][node] = {"op": rounds[0]["nodes"][node]["op"],
                                     "ms": float(np.median([r["nodes"].get(node, {"ms": 0})["ms"] for r in rounds]))}
        results[label] = summarize(merged)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "iters": args.iters, "rounds": args.rounds,
                                         "models": models, "results": results}, indent=2))
        args.json.with_suffix(".md").write_text(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

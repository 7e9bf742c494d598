#!/usr/bin/env python3
"""Many cameras, one model: 1, 2, 4, 8 concurrent camera clients, each sending one frame at a time as fast as its
answers come back, against

- ort/camera:   a local ONNX Runtime engine per camera (one appliance per camera, sharing this machine's cores);
- ort/shared:   one local engine for all cameras behind SharedEngine (micro-batching in one process);
- triton/grpc:  the model on the real tritonserver (nvidia-pytriton's binary, Python-backend model running ONNX
                Runtime), frames over gRPC, one client per camera;
- triton/shm:   the same with frames and outputs in POSIX shared memory.

For each: throughput (frames/s), latency p50/p99 of one call, and the mean batch the server ran (Triton's statistics
API: inferences / executions; SharedEngine: its calls). Clients and server share this machine's cores: on a small
CPU box that is the comparison that matters (what one box can serve), not the GPU case.

    python tools/bench_triton.py --out runs/bench_triton [--variant prn-edge|prn-tiny] [--size 256] [--onnx M.onnx]
                                 [--clients 1 2 4 8] [--seconds 6]
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np


def measure(engines: list, frames: np.ndarray, seconds: float, warmup: int = 5, stats=None) -> dict:
    """Run one client thread per engine (entered, warmed up, then released together) for `seconds`.
    stats: a callable giving (inferences, executions) of the server, read around the measured window."""
    n = len(engines)
    ready = threading.Barrier(n + 1)
    go = threading.Event()
    lat: list[list[float]] = [[] for _ in range(n)]
    errors: list[str] = []
    deadline = [0.0]

    def client(i: int, engine) -> None:
        try:
            with engine:
                for j in range(warmup):
                    engine.infer(frames[j % len(frames)][None])
                ready.wait()
                go.wait()
                j = i
                while time.perf_counter() < deadline[0]:
                    t0 = time.perf_counter()
                    engine.infer(frames[j % len(frames)][None])
                    lat[i].append(time.perf_counter() - t0)
                    j += 1
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # reported in the row
            errors.append(f"{e.__class__.__name__}: {e}")
            ready.abort()

    threads = [threading.Thread(target=client, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    before = stats() if stats and not errors else None
    t_start = time.perf_counter()
    deadline[0] = t_start + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    after = stats() if stats and not errors else None
    all_lat = np.array([x for per in lat for x in per])
    row = {"clients": n, "frames": int(all_lat.size), "seconds": round(wall, 2),
           "throughput_fps": round(all_lat.size / wall, 1) if wall > 0 else None,
           "p50_ms": round(float(np.percentile(all_lat, 50)) * 1e3, 2) if all_lat.size else None,
           "p99_ms": round(float(np.percentile(all_lat, 99)) * 1e3, 2) if all_lat.size else None,
           "errors": errors[:3]}
    if before is not None and after is not None:
        inferences, executions = after[0] - before[0], after[1] - before[1]
        row["mean_batch"] = round(inferences / executions, 2) if executions else None
    return row


def triton_stats(address: str, model: str):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)

    def read() -> tuple[int, int]:
        s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    return read


def markdown(rows: list[dict]) -> str:
    lines = ["| setup | cameras | frames/s | p50 ms | p99 ms | mean batch |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        batch = r.get("mean_batch")
        lines.append(f"| {r['setup']} | {r['clients']} | {r['throughput_fps']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{'' if batch is None else batch} |" + (f" errors: {r['errors']}" if r["errors"] else ""))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_triton")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--variant", default="prn-edge",
                    help="the model (prototypes fitted, not trained): prn-edge, prn-tiny")
    ap.add_argument("--size", type=int, help="camera frame side (default: the model's; the graph resizes others)")
    ap.add_argument("--onnx", help="a uint8 prn_edge ONNX to serve instead")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--queue-delay-us", type=int, default=100)
    ap.add_argument("--instances", type=int, default=1, help="Triton model instances")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime threads of every session: each camera's, the shared one, each Triton "
                         "instance's (on 2 busy cores 1 beat 2, most of all in Triton, whose Python backend keeps a "
                         "core busy while its stub computes)")
    ap.add_argument("--setups", nargs="+", default=["ort/camera", "ort/shared", "triton/grpc", "triton/shm"])
    args = ap.parse_args()

    from prn_edge.bench.machine import machine_info
    from prn_edge.config import make_config
    from prn_edge.data.demo import make_dataset
    from prn_edge.data.dataset import load_category
    from prn_edge.data.images import read_image
    from prn_edge.evaluate.report import write_json
    from prn_edge.export.onnx_export import export_onnx
    from prn_edge.sim.line_bench import tiny_onnx_model
    from prn_edge.line.shared import SharedEngine
    from prn_edge.runtime import open_engine
    from prn_edge.serve.triton_repo import write_model
    from prn_edge.serve.triton_server import LocalTritonServer

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # a square dataset at least as large as the model input
    model_size = max(make_config(args.variant).model.sized().hw)
    size = args.size or model_size
    data = {}
    for name, side in (("model", model_size), ("camera", size)):
        data[name] = out / f"data_{side}" / "gravel"
        if not (data[name] / "meta.json").is_file():
            make_dataset(data[name].parent, categories=["gravel"], n_train=4, n_test_good=12, n_test_defect=2,
                         n_shots=0, size=side, progress=False)
    if args.onnx:
        onnx_path = Path(args.onnx)
    else:  # prototypes fitted at the model's size (no training: the timing is the point), exported for the camera
        model_dir = out / f"model_{args.variant}"
        tiny_onnx_model(data["model"], model_dir, args.variant)
        onnx_path = model_dir / f"{args.variant}_{size}.onnx"
        export_onnx(model_dir / "tiny.pt", onnx_path, batch=None, input_format="uint8", channel_order="rgb",
                    input_hw=(size, size), lint_targets=())
    with open_engine(onnx_path) as probe:
        h, w, c = probe.input_spec.frame_shape
    frames = np.stack([read_image(s.image) for s in load_category(data["camera"], num_shots=0).test])
    if frames.shape[1:] != (h, w, c):
        frames = np.random.default_rng(0).integers(0, 256, (16, h, w, c), dtype=np.uint8)
    repo = out / "model_repository"
    if repo.exists():
        import shutil

        shutil.rmtree(repo)
    write_model([onnx_path], repo, name="bench", python_backend=True,
                options={"max_batch": args.max_batch, "max_queue_delay_us": args.queue_delay_us,
                         "instances": args.instances, "ort_threads": args.threads})

    rows = []
    report = {"machine": machine_info(), "load_avg_at_start": os.getloadavg(), "model": str(onnx_path),
              "variant": None if args.onnx else args.variant,
              "frame": [h, w, c], "seconds_per_point": args.seconds,
              "triton": {"max_batch": args.max_batch, "max_queue_delay_us": args.queue_delay_us,
                         "instances": args.instances, "ort_threads": args.threads,
                         "backend": "python (ONNX Runtime, CPU)"},
              "local": {"ort/camera": f"one engine per camera, threads={args.threads}",
                        "ort/shared": f"one engine, threads={args.threads}, SharedEngine(max_batch={args.max_batch}, "
                                      "wait_s=0.002)"}, "rows": rows}

    def record(setup: str, row: dict) -> None:
        rows.append({"setup": setup, **row})
        print(markdown([rows[-1]]).splitlines()[-1], flush=True)

    local = [s for s in args.setups if s.startswith("ort/")]
    for n in args.clients:
        if "ort/camera" in local:
            engines = [open_engine(onnx_path, threads=args.threads) for _ in range(n)]
            record("ort/camera", measure(engines, frames, args.seconds))
        if "ort/shared" in local:
            shared = SharedEngine(open_engine(onnx_path, threads=args.threads), max_batch=args.max_batch, wait_s=0.002)
            clients = [shared.client() for _ in range(n)]
            row = measure(clients, frames, args.seconds, stats=lambda: (sum(shared.calls), len(shared.calls)))
            record("ort/shared", row)
    remote = [s for s in args.setups if s.startswith("triton/")]
    if remote:
        with LocalTritonServer(repo) as server:
            stats = triton_stats(server.grpc_address, "bench")
            for n in args.clients:
                for setup in remote:
                    shm = "system" if setup == "triton/shm" else "none"
                    engines = [open_engine(server.url("bench") + f"?shared_memory={shm}") for _ in range(n)]
                    record(setup, measure(engines, frames, args.seconds, stats=stats))
    rows.sort(key=lambda r: (args.setups.index(r["setup"]), r["clients"]))
    table = markdown(rows)
    write_json(out / "bench_triton.json", report)
    (out / "bench_triton.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwritten {out / 'bench_triton.json'}, {out / 'bench_triton.md'}")
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

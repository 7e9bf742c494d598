#!/usr/bin/env python
"""Line runtime benchmark: loop overhead with a null engine at 100 frames/s from the simulated camera (TLSimu
through harvesters), sustained parts/s with the real default engine, and a soak with injected faults.

    python tools/bench_line.py --out runs/bench_line [--engine model.onnx] [--soak-parts 10000]

Writes <out>/bench_line.json and prints a table. Targets: overhead p99 <= 2 ms, 0 undecided parts, 0 late
actuations that were not fail-safe. Exits 1 when a part went undecided or a model verdict actuated late.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def engine_throughput(engine_path: str, frames: int, threads: int) -> dict:
    """Parts/s the real engine sustains on this machine, batch 1, real images."""
    import numpy as np

    from prn_edge.data.synth.textures import builtin_textures
    from prn_edge.runtime import open_engine
    from prn_edge.runtime.preprocess import rgb_to_frames

    with open_engine(engine_path, threads=threads) as eng:
        imgs = rgb_to_frames(builtin_textures(max(eng.input_spec.height, 64))[:16], eng.input_spec)
        for i in range(5):
            eng.infer(imgs[i % len(imgs)][None])
        t = time.perf_counter()
        lat = []
        for i in range(frames):
            s = time.perf_counter()
            eng.infer(imgs[i % len(imgs)][None])
            lat.append(time.perf_counter() - s)
        wall = time.perf_counter() - t
    ms = np.array(lat) * 1e3
    return {"engine": engine_path, "frames": frames, "threads": threads, "parts_per_s": frames / wall,
            "latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}}


def line_sustained(engine_path: str, dataset: str, rates: list[float], seconds: float, threads: int,
                   deadline_s: float = 0.15) -> list[dict]:
    """The whole line with the real engine: a synthetic conveyor at each rate for `seconds`, outputs recording.
    A rate is sustained when every part is decided by the model (no fail-safe because the engine fell behind)."""
    import numpy as np

    from prn_edge.line import Budget, Line, LoopOptions
    from prn_edge.sim.doubles import RecordingOutput
    from prn_edge.line.sources import SyntheticConveyor
    from prn_edge.runtime import open_engine

    out = []
    for rate in rates:
        parts = int(rate * seconds)
        source = SyntheticConveyor(dataset, rate_hz=rate, parts=parts, size=0)
        line = Line(source, open_engine(engine_path, threads=threads), [RecordingOutput()],
                    Budget.from_line(deadline_s=deadline_s), LoopOptions(resize=True))
        s = line.run()
        lat = [p.decision.t_decided - p.t_capture for p in line.records if not p.decision.fail_safe]
        model = sum(1 for p in line.records if not p.decision.fail_safe)
        out.append({"rate_hz": rate, "parts": s["parts"], "decided_by_model": model, "fail_safe": s["fail_safe"],
                    "undecided": s["undecided"], "sustained": model == s["parts"] and s["undecided"] == 0,
                    "capture_to_decision_ms": {"p50": round(1e3 * float(np.percentile(lat, 50)), 2),
                                               "p99": round(1e3 * float(np.percentile(lat, 99)), 2)} if lat else None})
        print(f"line at {rate:.0f} parts/s with {Path(engine_path).name}: {model}/{s['parts']} decided by the model, "
              f"fail-safe {s['fail_safe']}", flush=True)
    return out


def _environment() -> dict:
    """Load average and the CPU time the hypervisor took from this VM so far (steal): a stolen vCPU stalls
    every thread on it for milliseconds, which no scheduling inside the process can avoid."""
    env: dict = {}
    try:
        import os

        env["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        with open("/proc/stat") as f:
            cpu = f.readline().split()
        env["steal_s"] = int(cpu[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        pass
    return env


def tiled_throughput(engine_path: str, threads: int, frames: int = 5, height: int = 2448, width: int = 2048,
                     overlap: int = 32) -> dict:
    """Parts/s for a 5 MP area frame tiled at the model's input size: split, one batched inference, stitch."""
    import numpy as np

    from prn_edge.data.photos import load_photo
    from prn_edge.tiling import TileGrid
    from prn_edge.runtime import open_engine

    with open_engine(engine_path, threads=threads) as eng:
        spec = eng.input_spec
        grid = TileGrid(height, width, spec.height, spec.width, overlap)
        import cv2

        photo = load_photo("gravel")
        photo = photo if photo.ndim == 3 else np.repeat(photo[..., None], 3, axis=2)
        frame = cv2.resize(photo, (width, height), interpolation=cv2.INTER_LINEAR)
        if spec.channels == 1:
            frame = frame[..., :1]
        eng.infer(grid.split(frame)[:1])
        times = []
        for _ in range(frames):
            t = time.perf_counter()
            grid.stitch(eng.infer(grid.split(frame)).maps)
            times.append(time.perf_counter() - t)
    return {"frame": [height, width], "tile": [spec.height, spec.width], "overlap": overlap, "tiles": len(grid),
            "seconds_per_part": float(np.median(times)), "parts_per_s": float(1.0 / np.median(times)),
            "tiles_per_s": float(len(grid) / np.median(times))}


def main() -> int:
    from prn_edge.bench.machine import machine_info
    from prn_edge.artefact import write_json
    from prn_edge.sim.line_bench import encoder_timing, overhead, soak

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_line")
    ap.add_argument("--source", default="tlsimu", choices=["tlsimu", "conveyor"])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--parts", type=int, default=1000)
    ap.add_argument("--soak-parts", type=int, default=10000)
    ap.add_argument("--soak-rate", type=float, default=200.0)
    ap.add_argument("--dataset", help="category folder for the conveyor/soak (default: a small demo dataset)")
    ap.add_argument("--engine", help="exported .onnx (or .pt/.engine) for the sustained parts/s measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="overhead runs (the VM's stolen time varies run to run)")
    ap.add_argument("--line-rates", type=float, nargs="*", default=[30.0, 40.0, 50.0],
                    help="conveyor rates (parts/s) for the whole line with the real engine")
    ap.add_argument("--line-seconds", type=float, default=15.0)
    ap.add_argument("--encoder-parts", type=int, default=200, help="encoder-timed line (0 = skip)")
    ap.add_argument("--line-dataset", help="category folder at the engine's input size (default: --dataset)")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = args.dataset
    if dataset is None:
        from prn_edge.data.demo import make_dataset

        if not (out / "data" / "gravel" / "meta.json").is_file():
            make_dataset(out / "data", categories=["gravel"], n_train=2, n_test_good=20, n_test_defect=4, n_shots=0,
                         size=64, progress=False)
        dataset = str(out / "data" / "gravel")
    report = {"machine": machine_info(), "targets": {"overhead_p99_ms": 2.0, "undecided": 0, "late_model_actuations": 0}}
    env0 = _environment()
    # Overhead: several runs, each with the CPU time the hypervisor stole during it. The headline is the run with
    # the least steal (what the loop itself costs); every run and the median p99 are reported beside it.
    runs = []
    for i in range(args.repeat):
        e0 = _environment()
        run = overhead(args.source, args.rate, args.parts, cti="", dataset=dataset)
        e1 = _environment()
        run["steal_s"] = round(e1.get("steal_s", 0) - e0.get("steal_s", 0), 2)
        runs.append(run)
        print(f"overhead run {i + 1}/{args.repeat}: p50 {run['overhead_ms']['p50']:.2f} ms, "
              f"p99 {run['overhead_ms']['p99']:.2f} ms, stolen {run['steal_s']} s", flush=True)
    report["overhead"] = min(runs, key=lambda r: r["steal_s"])
    report["overhead_runs"] = [{"p50_ms": r["overhead_ms"]["p50"], "p99_ms": r["overhead_ms"]["p99"],
                                "max_ms": r["overhead_ms"]["max"], "steal_s": r["steal_s"],
                                "late_model_actuations": r["late_model_actuations"]} for r in runs]
    report["overhead_p99_ms_median_of_runs"] = float(sorted(r["overhead_ms"]["p99"] for r in runs)[len(runs) // 2])
    report["soak"] = soak(args.soak_parts, args.soak_rate, dataset) if args.soak_parts else None
    report["encoder"] = encoder_timing(dataset, parts=args.encoder_parts) if args.encoder_parts else None
    env1 = _environment()
    report["environment"] = {"loadavg_before": env0.get("loadavg"), "loadavg_after": env1.get("loadavg"),
                             "steal_s_during": (round(env1["steal_s"] - env0["steal_s"], 2)
                                                if "steal_s" in env0 and "steal_s" in env1 else None)}
    if args.engine:
        report["engine"] = engine_throughput(args.engine, 200, args.threads)
        report["line_sustained"] = line_sustained(args.engine, args.line_dataset or dataset, args.line_rates,
                                                  args.line_seconds, args.threads)
        report["tiled_5mp"] = tiled_throughput(args.engine, args.threads)
    write_json(out / "bench_line.json", report)
    o, s = report["overhead"], report["soak"] or {}
    rows = ["| measure | value |", "|---|---:|"]
    for key in ("overhead_ms", "decide_overhead_ms", "actuate_overhead_ms"):
        if isinstance(o.get(key), dict) and o[key].get("n"):
            rows.append(f"| {key} p50 / p99 (n={o[key]['n']}, run with least steal) | "
                        f"{o[key]['p50']:.2f} / {o[key]['p99']:.2f} |")
    rows.append("| overhead p99 of every run (stolen s) | " + ", ".join(
        f"{r['p99_ms']:.2f} ({r['steal_s']})" for r in report["overhead_runs"]) + " |")
    if s:
        rows += [f"| soak parts | {s['parts']} |", f"| undecided | {s['undecided']} |",
                 f"| not actuated exactly once | {s['not_actuated_exactly_once']} |",
                 f"| late model actuations (of them during machine pauses) | {s['late_model_actuations']} "
                 f"({s['late_model_actuations_during_machine_pauses']}) |",
                 f"| machine pauses > {s['machine_pauses']['threshold_ms']:.0f} ms seen by a probe process | "
                 f"{s['machine_pauses']['count']}, max {s['machine_pauses']['max_ms']} ms |",
                 f"| fail-safe by cause | {s['fail_safe']} |"]
    if report.get("encoder"):
        e = report["encoder"]["eject_error_counts"]
        rows.append(f"| encoder-timed line (belt 2000 -> 1000 -> stop -> 3000 counts/s): eject position error p50 / p90 "
                    f"/ max, counts | {e['p50']} / {e['p90']} / {e['max']} ({report['encoder']['parts']} parts, "
                    f"undecided {report['encoder']['undecided']}) |")
    env = report["environment"]
    rows.append(f"| load before / after; CPU stolen by the hypervisor | {env['loadavg_before']} / "
                f"{env['loadavg_after']}; {env['steal_s_during']} s |")
    if "engine" in report:
        e = report["engine"]
        rows.append(f"| engine parts/s (batch 1, {e['threads']} threads) | {e['parts_per_s']:.1f} |")
    for r in report.get("line_sustained", []):
        lat = r["capture_to_decision_ms"] or {}
        rows.append(f"| whole line at {r['rate_hz']:.0f} parts/s: decided by the model; capture->decision p50/p99 | "
                    f"{r['decided_by_model']}/{r['parts']}{' (sustained)' if r['sustained'] else ''}; "
                    f"{lat.get('p50', '-')} / {lat.get('p99', '-')} ms |")
    if "tiled_5mp" in report:
        t = report["tiled_5mp"]
        rows.append(f"| {t['frame'][0]}x{t['frame'][1]} frame, {t['tiles']} tiles of {t['tile'][0]}: parts/s "
                    f"| {t['parts_per_s']:.2f} ({t['tiles_per_s']:.0f} tiles/s) |")
    table = "\n".join(rows)
    (out / "bench_line.md").write_text(table + "\n")
    print(table)
    bad = s and (s["undecided"] or s["late_model_actuations"] or s["not_actuated_exactly_once"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""`prn-edge bench`: several artefacts side by side on the same real images, trtexec-style statistics
for the whole job (preprocess, transfers, compute, postprocess), agreement with a reference, and the fraction of
the machine's float32 GEMM peak each artefact reaches (model FLOPs / latency, the peak measured with the same
thread count in every round)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..runtime import STAGES, open_engine
from ..runtime.base import describe_line
from ..runtime.preprocess import rgb_to_frames
from ..verify import compare
from .machine import gemm_peak_gflops


@dataclass
class Artefact:
    path: Path
    label: str
    backend: str = "auto"
    allow_failed_gate: bool = False
    options: dict = field(default_factory=dict)  # the backend's options (e.g. ONNX Runtime's providers)


def percentiles(ms: np.ndarray) -> dict:
    return {"min": float(ms.min()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def precision_of(meta: dict, path: Path) -> str:
    if meta.get("precision"):
        return str(meta["precision"])
    if path.suffix == ".onnx":
        from ..artefact.onnx_header import op_types

        return "int8 (Q/DQ)" if "QuantizeLinear" in op_types(path.read_bytes()) else "fp32"
    return "fp32"


def run_bench(artefacts: Sequence[Artefact], images: Sequence[np.ndarray], batches: Sequence[int] = (1,),
              warmup: int = 10, iters: int = 50, threads: Optional[int] = None, agreement_images: int = 16,
              progress: bool = True, log: Callable[[str], None] = print, rounds: int = 5) -> dict:
    """Benchmark each artefact at each batch size; the first artefact is the agreement and speed reference.

    The measured iterations are split into `rounds`, and the artefacts take turns round by round: on a shared
    machine whose speed drifts by tens of percent from one minute to the next, back-to-back blocks would
    compare artefacts under different conditions. Each turn starts with a short warm-up (a previous backend's
    spinning worker threads, cold caches). speedup_vs_reference is the median over rounds of the per-round
    ratio of mean latencies. Each round also measures the float32 GEMM peak with `threads`; an artefact's
    peak_fraction is the median over rounds of its GFLOP/s (model FLOPs / round mean latency) over that round's
    peak."""
    from contextlib import ExitStack

    rounds = max(1, min(rounds, iters))
    results, reference, all_peaks = [], None, []
    with ExitStack() as stack:
        engines = []
        for art in artefacts:
            opts = {"threads": threads, **art.options}  # an artefact's own options win over --threads
            eng = stack.enter_context(open_engine(art.path, backend=art.backend, allow_failed_gate=art.allow_failed_gate,
                                                  **opts))
            log(f"{art.label}: {describe_line(eng.describe())}")  # a wrong install shows before any number
            spec = eng.input_spec
            frames = rgb_to_frames(images, spec)
            # agreement on the same frames, batch by batch as the engine likes them
            out = eng.infer(frames[:agreement_images])
            if reference is None:
                reference = out
            agree = compare(reference, out)
            engines.append((art, eng, frames, agree))
        for b in batches:
            runs = []
            for art, eng, frames, agree in engines:
                if eng.input_spec.batch is not None and eng.input_spec.batch != b:
                    results.append({"artefact": art.label, "path": str(art.path), "batch": b,
                                    "skipped": f"artefact has a static batch of {eng.input_spec.batch}"})
                    continue
                for i in range(warmup):
                    eng.infer(frames[(np.arange(b) + i * b) % len(frames)])
                runs.append({"art": art, "eng": eng, "frames": frames, "agree": agree, "lat": [], "round_means": [],
                             "stages": dict.fromkeys(STAGES, 0.0), "reruns": 0})
            per_round = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
            bar = tqdm(total=iters * len(runs), desc=f"batch {b}, {rounds} rounds", disable=not progress, leave=False)
            idx = np.arange(b)
            peaks = []
            for n in per_round:
                peak = gemm_peak_gflops(threads)
                peaks.append(peak["gflops"])
                all_peaks.append(peak)
                for run in runs:
                    eng, frames = run["eng"], run["frames"]
                    for i in range(2):  # the turn's warm-up
                        eng.infer(frames[(idx + i * b) % len(frames)])
                    lat = []
                    for i in range(n):
                        batch = frames[(idx + (len(run["lat"]) + i) * b) % len(frames)]
                        t = time.perf_counter()
                        eng.infer(batch)
                        lat.append(time.perf_counter() - t)
                        for k, v in eng.last_timings.items():
                            run["stages"][k] = run["stages"].get(k, 0.0) + v
                        run["reruns"] += getattr(eng, "last_rerun", 0)  # a cascade's frames its reference decided
                    run["lat"] += lat
                    run["round_means"].append(float(np.mean(lat)))
                    bar.update(n)
            bar.close()
            ref_means = np.array(runs[0]["round_means"]) if runs else None
            for run in runs:
                art, eng = run["art"], run["eng"]
                meta = eng.metadata
                gflops = (meta.get("model") or {}).get("gflops_per_image")
                ms = np.array(run["lat"]) * 1e3
                stats = percentiles(ms)
                row = {"artefact": art.label, "path": str(art.path), "backend": eng.backend, "engine": eng.describe(),
                       "precision": precision_of(meta, Path(art.path)), "batch": b, "iters": len(ms),
                       "rounds": rounds, "latency_ms": stats, "throughput_ips": b * 1e3 / stats["mean"],
                       "round_mean_ms": [round(1e3 * m, 3) for m in run["round_means"]],
                       "speedup_vs_reference": float(np.median(ref_means / np.array(run["round_means"]))),
                       "stages_ms": {k: 1e3 * v / len(ms) for k, v in run["stages"].items()}, **run["agree"],
                       "input": {"format": eng.input_spec.format, "shape": [b, *eng.input_spec.frame_shape]}}
                if hasattr(eng, "last_rerun"):  # a cascade: the share of frames that ran its FP32 reference too
                    row["reference_share"] = run["reruns"] / (len(ms) * b)
                    row["precision"] += f"; FP32 decided {100 * row['reference_share']:.0f}% of frames"
                    gflops = gflops and gflops * (1 + row["reference_share"])  # the work both models did
                if gflops:
                    row["gflops_per_image"] = gflops
                    row["achieved_gflops"] = gflops * row["throughput_ips"]
                    row["gemm_peak_gflops"] = float(np.median(peaks))
                    row["peak_fraction"] = float(np.median(gflops * b / np.array(run["round_means"]) / np.array(peaks)))
                results.append(row)
                log(f"{art.label:>24} b{b}: p50 {stats['p50']:.2f} ms, p99 {stats['p99']:.2f} ms, "
                    f"{row['throughput_ips']:.1f} img/s, x{row['speedup_vs_reference']:.2f} vs "
                    f"{runs[0]['art'].label}, agreement {run['agree']['decision_agreement']:.3f}"
                    + (f", {row['achieved_gflops']:.1f} GFLOP/s = {100 * row['peak_fraction']:.1f}% of GEMM peak "
                       f"{row['gemm_peak_gflops']:.0f}" if gflops else ""))
    return {"results": results, "reference": artefacts[0].label if artefacts else None,
            # every round's measurement (taken beside the artefacts' rounds), not one more afterwards
            "gemm_peak": ({**all_peaks[0], "gflops": float(np.median([p["gflops"] for p in all_peaks])),
                           "rounds": len(all_peaks)} if all_peaks else gemm_peak_gflops(threads)),
            "warmup": warmup, "iters": iters, "rounds": rounds, "threads": threads, "batches": list(batches)}


def images_used(images: Sequence[np.ndarray], folder: Optional[str]) -> dict:
    """What a benchmark was given: the folder (or the built-in textures), how many images, their sizes (height x
    width: count). Timing cycles through them (iters x batch frames in all), the agreement reads the first
    agreement_images of them."""
    sizes: dict[str, int] = {}
    for img in images:
        key = f"{img.shape[0]}x{img.shape[1]}"
        sizes[key] = sizes.get(key, 0) + 1
    return {"source": str(folder) if folder else "built-in textures", "count": len(images), "sizes": sizes}


def markdown(report: dict) -> str:
    rows = ["| artefact | backend | precision | batch | p50 ms | p90 ms | p99 ms | max ms | img/s | pre ms | "
            "compute ms | post ms | GFLOP/s | % GEMM peak | speed-up | agree | max map diff |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        if "skipped" in r:
            rows.append(f"| {r['artefact']} | | | {r['batch']} | {r['skipped']} |" + " |" * 12)
            continue
        L, S = r["latency_ms"], r["stages_ms"]
        rows.append(f"| {r['artefact']} | {r['backend']} | {r['precision']} | {r['batch']} | {L['p50']:.2f} | "
                    f"{L['p90']:.2f} | {L['p99']:.2f} | {L['max']:.2f} | {r['throughput_ips']:.1f} | "
                    f"{S.get('preprocess', 0):.2f} | {S.get('compute', 0):.2f} | {S.get('postprocess', 0):.2f} | "
                    f"{r.get('achieved_gflops', float('nan')):.1f} | {100 * r.get('peak_fraction', float('nan')):.1f} | "
                    f"x{r.get('speedup_vs_reference', 1.0):.2f} | "
                    f"{r['decision_agreement']:.3f} | "
                    f"{r['max_abs_map_diff']:.2e} |")
    used = report.get("images")
    if used:
        sizes = ", ".join(f"{k} ({n})" for k, n in sorted(used["sizes"].items(), key=lambda kv: -kv[1]))
        rows.append(f"\n{used['count']} images from {used['source']}: {sizes}")
    return "\n".join(rows) + "\n"


def latency_plot(report: dict, png: Path) -> Optional[Path]:
    """The latency picture; None where matplotlib is not installed (the appliance's runtime install)."""
    try:
        import matplotlib
    except ImportError:
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "skipped" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['artefact']}\nb{r['batch']}" for r in rows]
    y = np.arange(len(rows))
    for key, color in (("p50", "tab:blue"), ("p99", "tab:red")):
        axes[0].barh(y + (0.2 if key == "p99" else -0.2), [r["latency_ms"][key] for r in rows], height=0.4,
                     color=color, label=key)
    axes[0].set_yticks(y, labels)
    axes[0].set_xlabel("latency per batch (ms)")
    axes[0].legend()
    axes[0].invert_yaxis()
    axes[1].barh(y, [r["throughput_ips"] for r in rows], color="tab:green")
    axes[1].set_yticks(y, labels)
    axes[1].set_xlabel("throughput (images/s)")
    axes[1].invert_yaxis()
    fig.suptitle("prn-edge bench")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png

"""`prn-edge bench`: several artefacts side by side on the same real images, trtexec-style statistics
for the whole job (preprocess, transfers, compute, postprocess), and agreement with a reference."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..runtime import STAGES, open_engine
from ..runtime.preprocess import rgb_to_frames


@dataclass
class Artefact:
    path: Path
    label: str
    backend: str = "auto"


def percentiles(ms: np.ndarray) -> dict:
    return {"min": float(ms.min()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def precision_of(meta: dict, path: Path) -> str:
    if meta.get("precision"):
        return str(meta["precision"])
    if path.suffix == ".onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        return "int8 (Q/DQ)" if "QuantizeLinear" in ops else "fp32"
    return "fp32"


def run_bench(artefacts: Sequence[Artefact], images: Sequence[np.ndarray], batches: Sequence[int] = (1,),
              warmup: int = 10, iters: int = 50, threads: Optional[int] = None, agreement_images: int = 16,
              progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Benchmark each artefact at each batch size; the first artefact is the agreement reference."""
    results, reference = [], None
    for art in artefacts:
        with open_engine(art.path, backend=art.backend, threads=threads) as eng:
            spec = eng.input_spec
            frames = rgb_to_frames(images, spec)
            meta = eng.metadata
            gflops = (meta.get("model") or {}).get("gflops_per_image")
            # agreement on the same frames, batch by batch as the engine likes them
            out = eng.infer(frames[:agreement_images])
            if reference is None:
                reference = out
            agree = {"decision_agreement": float(np.mean(out.decisions == reference.decisions)),
                     "max_abs_map_diff": float(np.abs(out.maps - reference.maps).max()),
                     "max_abs_score_diff": float(np.abs(out.scores - reference.scores).max())}
            for b in batches:
                if spec.batch is not None and spec.batch != b:
                    results.append({"artefact": art.label, "path": str(art.path), "batch": b,
                                    "skipped": f"artefact has a static batch of {spec.batch}"})
                    continue
                idx = np.arange(b)
                for i in range(warmup):
                    eng.infer(frames[(idx + i * b) % len(frames)])
                lat, stages = [], dict.fromkeys(STAGES, 0.0)
                bar = tqdm(range(iters), desc=f"{art.label} b{b}", disable=not progress, leave=False)
                for i in bar:
                    batch = frames[(idx + i * b) % len(frames)]
                    t = time.perf_counter()
                    eng.infer(batch)
                    lat.append(time.perf_counter() - t)
                    for k, v in eng.last_timings.items():
                        stages[k] = stages.get(k, 0.0) + v
                ms = np.array(lat) * 1e3
                stats = percentiles(ms)
                row = {"artefact": art.label, "path": str(art.path), "backend": eng.backend,
                       "precision": precision_of(meta, Path(art.path)), "batch": b, "iters": iters,
                       "latency_ms": stats, "throughput_ips": b * 1e3 / stats["mean"],
                       "stages_ms": {k: 1e3 * v / iters for k, v in stages.items()}, **agree,
                       "input": {"format": spec.format, "shape": [b, *spec.frame_shape]}}
                if gflops:
                    row["gflops_per_image"] = gflops
                    row["achieved_gflops"] = gflops * row["throughput_ips"]
                results.append(row)
                log(f"{art.label:>24} b{b}: p50 {stats['p50']:.2f} ms, p99 {stats['p99']:.2f} ms, "
                    f"{row['throughput_ips']:.1f} img/s, agreement {agree['decision_agreement']:.3f}")
    return {"results": results, "reference": artefacts[0].label if artefacts else None,
            "warmup": warmup, "iters": iters, "threads": threads, "batches": list(batches)}


def markdown(report: dict) -> str:
    rows = ["| artefact | backend | precision | batch | p50 ms | p90 ms | p99 ms | max ms | img/s | pre ms | "
            "compute ms | post ms | GFLOP/s | agree | max map diff |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        if "skipped" in r:
            rows.append(f"| {r['artefact']} | | | {r['batch']} | {r['skipped']} |" + " |" * 10)
            continue
        L, S = r["latency_ms"], r["stages_ms"]
        rows.append(f"| {r['artefact']} | {r['backend']} | {r['precision']} | {r['batch']} | {L['p50']:.2f} | "
                    f"{L['p90']:.2f} | {L['p99']:.2f} | {L['max']:.2f} | {r['throughput_ips']:.1f} | "
                    f"{S.get('preprocess', 0):.2f} | {S.get('compute', 0):.2f} | {S.get('postprocess', 0):.2f} | "
                    f"{r.get('achieved_gflops', float('nan')):.1f} | {r['decision_agreement']:.3f} | "
                    f"{r['max_abs_map_diff']:.2e} |")
    return "\n".join(rows) + "\n"


def latency_plot(report: dict, png: Path) -> Path:
    import matplotlib

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

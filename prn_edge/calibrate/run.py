"""`prn-edge calibrate`: one audited INT8 calibration run in calibration/<run>/.

checkpoint -> FP32 ONNX -> calibration set (training normals, stratified) -> Q/DQ INT8 -> accuracy gate
against FP32 on the validation split -> if the drop exceeds the tolerance, keep the most sensitive layers
in float and try again. Every attempt is reported. The run folder is assembled in a temporary folder and
renamed at the end, so a failed run leaves nothing half-written in calibration/.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np

from .. import __version__
from ..artefact import (CALIBRATION_RUN, RUN_MANIFEST, decide, new_manifest, read_metadata, write_manifest,
                        write_metadata)
from ..errors import ConfigError
from .dataset import describe_files, select_calibration_set
from .quantize import FLAVOURS, METHODS, float_by_design, prepare, quantizable_nodes, quantize_qdq
from .refit import refit_prototypes
from .sensitivity import layer_groups, rank_sensitive_groups, rank_sensitive_nodes


@dataclass
class CalibrationOptions:
    flavour: str = "cpu"
    method: str = "minmax"
    size: int = 32  # calibration images from the training normals
    defects: int = 0  # real defect shots added to the calibration set
    seed: int = 0
    max_image_auroc_drop: float = 0.005  # 0.5 point
    max_pixel_auroc_drop: float = 0.01  # 1 point
    min_decision_agreement: float = 0.95
    max_attempts: int = 4  # first try + fallbacks that keep 2, 4, 8 ... sensitive layers in float
    refit_prototypes: bool = True  # k-means the prototypes again on the INT8 encoder's features (refit.py)
    keep_float: tuple = ()  # node-name prefixes kept in float in every attempt (e.g. "/decoder/")
    # How fallbacks choose what to keep in float: "groups" measures each layer group's effect on the anomaly
    # map (one quantization per group); "sqnr" ranks single nodes by their local quantization noise (cheap).
    sensitivity: str = "groups"
    batch: Optional[int] = 1  # of the exported model; None = dynamic
    input_format: str = "float"
    channel_order: str = "rgb"
    input_hw: Optional[tuple] = None
    force_data: bool = False  # calibrate on data whose training normals differ from the checkpoint's

    def validate(self) -> "CalibrationOptions":
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"--flavour {self.flavour!r}: choose one of {FLAVOURS}")
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {METHODS}")
        if self.sensitivity not in ("groups", "sqnr"):
            raise ConfigError(f"--sensitivity {self.sensitivity!r}: choose one of ['groups', 'sqnr']")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be >= 1")
        return self


@dataclass
class Attempt:
    excluded: list
    quantization: dict
    metrics: dict
    passed: bool
    seconds: float
    reasons: list = field(default_factory=list)


def gate_metrics(fp32, int8) -> dict:
    """Compare the two engines' results on the same validation set (dicts from _evaluate)."""
    from ..verify import compare

    d = {k: int8[k] - fp32[k] for k in ("image_auroc", "pixel_auroc", "aupro")}
    # The one comparator's fields (decisions under the FP32 threshold) ...
    c = compare(SimpleNamespace(**fp32), SimpleNamespace(**int8))
    return {"fp32": {k: fp32[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
            "int8": {k: int8[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
            "delta": d,
            # ... and the gate's own: each artefact decides with its own threshold (same rule, same validation
            # split); the agreement under the FP32 threshold shows how much of the difference is a score shift.
            "decision_agreement": float(np.mean(fp32["decisions"] == int8["own_decisions"])),
            "decision_agreement_fp32_threshold": c["decision_agreement"],
            "int8_decision": int8["decision_params"],
            "map_correlation": c["map_correlation"],
            "max_abs_map_diff": c["max_abs_map_diff"],
            "score_mae": c["mean_abs_score_diff"],
            "comparison": c}


def _evaluate(engine_path: Path, frames: np.ndarray, labels: np.ndarray, masks: np.ndarray, threads: int = 0) -> dict:
    from ..evaluate.metrics import aupro, auroc, pixel_auroc
    from ..runtime import open_engine
    from ..evaluate.thresholds import decision_params

    with open_engine(engine_path, threads=threads or None) as eng:
        maps, scores, decisions = [], [], []
        for i in range(0, len(frames), eng.input_spec.batch or 8):
            r = eng.infer(frames[i:i + (eng.input_spec.batch or 8)])
            maps.append(r.maps), scores.append(r.scores), decisions.append(r.decisions)
    maps, scores = np.concatenate(maps), np.concatenate(scores)
    own = decision_params(maps, scores, masks, labels)
    return {"maps": maps, "scores": scores, "decisions": np.concatenate(decisions),
            "decision_params": own, "own_decisions": decide(scores, own),
            "image_auroc": auroc(scores, labels), "pixel_auroc": pixel_auroc(maps, masks), "aupro": aupro(maps, masks)}


def _check(m: dict, o: CalibrationOptions) -> list[str]:
    reasons = []
    if -m["delta"]["image_auroc"] > o.max_image_auroc_drop:
        reasons.append(f"image AUROC drop {-100 * m['delta']['image_auroc']:.2f} pt > {100 * o.max_image_auroc_drop:.2f}")
    if -m["delta"]["pixel_auroc"] > o.max_pixel_auroc_drop:
        reasons.append(f"pixel AUROC drop {-100 * m['delta']['pixel_auroc']:.2f} pt > {100 * o.max_pixel_auroc_drop:.2f}")
    if m["decision_agreement"] < o.min_decision_agreement:
        reasons.append(f"decision agreement {m['decision_agreement']:.3f} < {o.min_decision_agreement}")
    return reasons


def calibrate(ckpt: Path, data: Path, run: str, root: Path = Path("calibration"), options: CalibrationOptions | None = None,
              log: Callable[[str], None] = print, threads: int = 0) -> dict:
    from ..data.dataset import load_category
    from ..export.onnx_export import export_onnx
    from ..runtime.preprocess import frames_to_model_input, rgb_to_frames
    from ..model.checkpoint import load_model
    from ..data.dataset import load_pair
    from ..evaluate.validation import load_normals, split_normals, split_shots, synth_foreground, validation_set
    from ..artefact.files import files_sha256

    o = (options or CalibrationOptions()).validate()
    t0 = time.time()
    if not run or run in (".", "..") or Path(run).name != run or "\\" in run:
        raise ConfigError(f"--run {run!r}: a run is named by one folder name (letters, digits, - _ .), created under "
                          f"--root {root}; no path separators, '..' or absolute paths")
    final = Path(root) / run
    if final.exists():
        raise ConfigError(f"calibration run {final} exists already; choose another --run name or delete it")
    tmp = Path(root) / f".{run}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _, cfg, meta = load_model(ckpt)
        cat = load_category(Path(data), seed=meta.get("data_seed", 0))
        fit_paths, val_paths = split_normals(cat, cfg.train)
        recorded = meta.get("train_images_sha256")
        if recorded and files_sha256(fit_paths + val_paths) != recorded:
            if not o.force_data:
                raise ConfigError(f"{data}: its training normals are not the ones {ckpt} was trained on (data hash "
                                  "differs): calibrating on another category or another copy makes an INT8 model "
                                  "for the wrong data. Give the training folder, or pass --force-data")
            log(f"WARNING: {data} differs from the checkpoint's training data (hash); calibrating anyway (--force-data)")
        calib_paths = select_calibration_set(fit_paths, o.size, o.seed, cat.shots, o.defects)

        log(f"exporting {ckpt} to FP32 ONNX")
        export_onnx(ckpt, tmp / "model.fp32.onnx", batch=o.batch, input_format=o.input_format,
                    channel_order=o.channel_order, input_hw=o.input_hw)
        fp32 = prepare(tmp / "model.fp32.onnx", tmp / "model.fp32.onnx")
        spec = read_metadata(fp32)["input_spec"]

        def model_inputs(images: list) -> list[np.ndarray]:
            frames = rgb_to_frames(images, spec)
            x = frames if spec.format == "uint8" else frames_to_model_input(frames, spec)
            b = spec.batch or 1
            return [x[i:i + b] for i in range(0, len(x) - len(x) % b, b)]

        calib_batches = model_inputs(load_normals(calib_paths, cfg)[0])
        hw = cfg.model.hw
        shots = [load_pair(s, hw, cfg.model.input_policy) for s in split_shots(cat.shots, cfg.train)[0]]
        val_imgs, val_masks, val_labels = validation_set(*load_normals(val_paths, cfg), cfg.synth, hw, shots, None,
                                                         synth_foreground(cfg, cat), cfg.train.seed)
        val_frames = rgb_to_frames(val_imgs, spec)
        log(f"validation: {len(val_imgs)} images ({int(val_labels.sum())} with generated anomalies); "
            f"calibration: {len(calib_paths)} images")
        ref = _evaluate(fp32, val_frames, val_labels, val_masks, threads)

        attempts: list[Attempt] = []
        fixed = float_by_design(fp32)
        if o.keep_float:
            import onnx

            chosen = [n.name for n in onnx.load(str(fp32)).graph.node if n.name.startswith(tuple(o.keep_float))]
            if not chosen:
                raise ConfigError(f"--keep-float {list(o.keep_float)}: no node name starts with these prefixes; "
                                  "node names look like /encoder/_blocks.3/..., /msa.1/..., /decoder/up2/...")
            fixed = sorted(set(fixed) | set(chosen))
        candidates = [n for n in quantizable_nodes(fp32, o.flavour) if n not in fixed]
        excluded: list[str] = []
        ranking: list[dict] = []
        fit_batches = None  # the normals the prototypes were fitted on (for the INT8 refit)
        best = None
        for a in range(o.max_attempts):
            ta = time.time()
            q_path = tmp / f"model.int8.try{a}.onnx"
            qinfo = quantize_qdq(fp32, q_path, spec.name, calib_batches, o.flavour, o.method, fixed + excluded)
            qinfo["float_by_design"] = len(fixed)
            if o.refit_prototypes:
                if fit_batches is None:
                    fit_batches = model_inputs(load_normals(fit_paths, cfg)[0])
                qinfo["prototypes_refit"] = refit_prototypes(q_path, q_path, fit_batches, cfg.model.prototype_mode,
                                                             cfg.model.prototype_softness, cfg.train.seed,
                                                             threads=threads)
            m = gate_metrics(ref, _evaluate(q_path, val_frames, val_labels, val_masks, threads))
            reasons = _check(m, o)
            attempts.append(Attempt(list(excluded), qinfo, m, not reasons, round(time.time() - ta, 1), reasons))
            log(f"attempt {a + 1}: {len(excluded)} layers in float, image AUROC {100 * m['int8']['image_auroc']:.2f} "
                f"(fp32 {100 * m['fp32']['image_auroc']:.2f}), pixel AUROC {100 * m['int8']['pixel_auroc']:.2f} "
                f"(fp32 {100 * m['fp32']['pixel_auroc']:.2f}), agreement {m['decision_agreement']:.3f}: "
                + ("PASS" if not reasons else "; ".join(reasons)))
            if best is None or _rank(m) > _rank(best[1].metrics):
                best = (q_path, attempts[-1])
            if not reasons:
                break
            if a + 1 >= o.max_attempts:
                break
            if not ranking:
                if o.sensitivity == "groups":
                    groups = dict(layer_groups(fp32, candidates))
                    ranking = rank_sensitive_groups(
                        fp32, spec.name, calib_batches, model_inputs(val_imgs[::max(1, len(val_imgs) // 8)][:8]),
                        list(groups.items()),
                        lambda out, exclude: quantize_qdq(fp32, out, spec.name, calib_batches, o.flavour, o.method,
                                                          exclude), fixed, log=log)
                else:
                    ranking = [r for r in rank_sensitive_nodes(fp32, q_path, spec.name, calib_batches[:8])
                               if r["node"] in candidates]
            if o.sensitivity == "groups":  # attempt k keeps the 2**(k-1) most sensitive layer groups in float
                excluded = [n for r in ranking[:2 ** a] for n in groups[r["group"]]]
                log(f"next attempt keeps in float: {[r['group'] for r in ranking[:2 ** a]]}")
            else:
                excluded = [r["node"] for r in ranking[:2 ** (a + 1)]]
        q_best, a_best = best
        _set_decision(q_best, a_best.metrics["int8_decision"], run, a_best.passed)
        q_best.rename(tmp / "model.int8.onnx")
        speed = _speed(tmp / "model.fp32.onnx", tmp / "model.int8.onnx", val_imgs[:8], threads)
        log(f"speed on this machine (ONNX Runtime CPU, batch 1, interleaved rounds): FP32 {speed['fp32_ms']:.2f} ms, "
            f"INT8 {speed['int8_ms']:.2f} ms, x{speed['speedup']:.2f}"
            + ("" if speed["vnni"] else " (this CPU has no VNNI: its int8 kernels gain little over float)"))
        if o.flavour == "cpu" and speed["speedup"] < 1.2:
            log("advice: INT8 buys less than 1.2x on this machine; deploy the FP32 model here, or this run's "
                "model on a CPU with VNNI (re-measure there: `prn-edge bench`)")
        for f in tmp.glob("model.int8.try*.onnx"):
            f.unlink()
        report = new_manifest(
            CALIBRATION_RUN, run=run, toolkit_version=__version__, checkpoint=str(Path(ckpt).resolve()),
            data=str(Path(data).resolve()), options=asdict(o), passed=a_best.passed,
            chosen_attempt=attempts.index(a_best) + 1, attempts=[asdict(x) for x in attempts],
            sensitivity=ranking[:16], calibration_files=describe_files(calib_paths),
            validation={"normals": [str(p.resolve()) for p in val_paths], "generated_anomalies": int(val_labels.sum()),
                        "seed": cfg.train.seed},
            artefacts={"fp32": "model.fp32.onnx", "int8": "model.int8.onnx"},
            tensorrt_calibration_cache=_trt_cache_note(),
            speed_here=speed,
            seconds=round(time.time() - t0, 1),
        )
        write_manifest(tmp / RUN_MANIFEST, report)
        (tmp / "report.md").write_text(attempts_table(report))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(attempts_table(report))
    log(f"{'PASSED' if report['passed'] else 'FAILED'}: {final / 'model.int8.onnx'} (manifest {final / RUN_MANIFEST})")
    return report


def _speed(fp32: Path, int8: Path, images: list, threads: int = 0) -> dict:
    """FP32 vs INT8 latency of the two artefacts here, taking turns (see bench.throughput.run_bench)."""
    from ..bench.throughput import Artefact, run_bench
    from .quantize import cpu_has_vnni

    # the run measures its own result, whatever its gate said
    r = run_bench([Artefact(fp32, "fp32"), Artefact(int8, "int8", allow_failed_gate=True)], images, iters=30, warmup=3, rounds=3,
                  threads=threads or None, agreement_images=len(images), progress=False, log=lambda m: None)
    f, q = r["results"]
    return {"fp32_ms": f["latency_ms"]["p50"], "int8_ms": q["latency_ms"]["p50"],
            "speedup": q["speedup_vs_reference"], "vnni": cpu_has_vnni(), "threads": threads or None}


def _set_decision(path: Path, params: dict, run: str, passed: bool) -> None:
    """The INT8 artefact carries thresholds derived from its own validation scores, with the training rule, and
    the result of its accuracy gate (run, bench and build refuse a failed one unless told otherwise)."""
    import onnx

    m = onnx.load(str(path))
    write_metadata(m, {"image_threshold": params["image_threshold"], "pixel_threshold": params["pixel_threshold"],
                       "score_spread": params["score_spread"], "calibration_run": run,
                       "accuracy_gate": "passed" if passed else "failed"})
    onnx.save(m, str(path))


def _rank(m: dict) -> tuple:
    return (-max(0.0, -m["delta"]["image_auroc"]) - max(0.0, -m["delta"]["pixel_auroc"]), m["decision_agreement"])


def _trt_cache_note() -> str:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "not written: TensorRT is not installed here (write it on the target with `prn-edge build --precision int8 --calibration RUN`)"
    return "written by `prn-edge build --precision int8 --implicit-int8 --calibration RUN` on the TensorRT host"


def attempts_table(report: dict) -> str:
    rows = ["| attempt | float layers | image AUROC fp32 -> int8 | pixel AUROC fp32 -> int8 | AUPRO int8 | agreement | "
            "agreement at fp32 thr | map corr | result |", "|---|---:|---|---|---:|---:|---:|---:|---|"]
    for i, a in enumerate(report["attempts"], 1):
        m = a["metrics"]
        rows.append(f"| {i} | {len(a['excluded'])} | {100 * m['fp32']['image_auroc']:.2f} -> {100 * m['int8']['image_auroc']:.2f} "
                    f"| {100 * m['fp32']['pixel_auroc']:.2f} -> {100 * m['int8']['pixel_auroc']:.2f} "
                    f"| {100 * m['int8']['aupro']:.2f} | {m['decision_agreement']:.3f} "
                    f"| {m['decision_agreement_fp32_threshold']:.3f} | {m['map_correlation']:.4f} "
                    f"| {'pass' if a['passed'] else 'fail: ' + '; '.join(a['reasons'])} |")
    return "\n".join(rows) + "\n"

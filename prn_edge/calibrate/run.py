"""`prn-edge calibrate`: one audited INT8 calibration run in calibration/<run>/.

checkpoint -> FP32 ONNX -> calibration set (training normals, stratified) -> INT8 (a Q/DQ ONNX from ONNX
Runtime's quantizer for the "cpu" and "tensorrt" flavours, an OpenVINO IR from NNCF for "openvino") -> accuracy
gate against FP32 on the validation split (the real defect shots the checkpoint held out when it has them, as
training chose its step and thresholds there; the generated anomalies otherwise, and reported beside) -> if the
drop exceeds the tolerance, keep the most sensitive layers
in float and try again. Every attempt is reported. The run folder is assembled in a temporary folder and
renamed at the end, so a failed run leaves nothing half-written in calibration/.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np
from scipy.special import ndtr  # the standard normal distribution function

from .. import __version__
from ..artefact import (CALIBRATION_RUN, RUN_MANIFEST, InputSpec, decide, new_manifest, read_metadata, write_manifest,
                        write_metadata)
from ..config import Config
from ..errors import ConfigError
from ..evaluate.validation import pixels
from .dataset import describe_files, select_calibration_set
from .nncf_quantize import NNCFSettings, check_installed, quantize_nncf
from .quantize import FLAVOURS, METHODS, float_by_design, input_layer, prepare, quantizable_nodes, quantize_qdq
from .refit import refit_prototypes
from .sensitivity import layer_groups, rank_sensitive_groups, rank_sensitive_nodes


@dataclass
class CalibrationOptions:
    flavour: str = "cpu"  # "cpu" (ONNX Runtime), "tensorrt" (Q/DQ for TensorRT), "openvino" (NNCF, an IR)
    method: str = "minmax"  # ONNX Runtime's range estimation; NNCF ("openvino") uses its own (min-max based)
    size: int = 32  # calibration images from the training normals
    defects: int = 0  # real defect shots added to the calibration set
    seed: int = 0
    max_image_auroc_drop: float = 0.005  # 0.5 point
    max_pixel_auroc_drop: float = 0.01  # 1 point
    min_decision_agreement: float = 0.95
    # The agreement the INT8 score noise lets one expect (expected_agreement): a few dozen held-out images count
    # flips too coarsely to promise a test set's agreement.
    min_expected_agreement: float = 0.95
    # The agreement with FP32 a cascade of this run's INT8 and FP32 models is to expect (runtime.cascade): it sets
    # the margin around the threshold within which FP32 decides (cascade_margin), recorded in the INT8 artefact.
    cascade_agreement: float = 0.99
    max_attempts: int = 4  # first try + fallbacks that keep 2, 4, 8 ... sensitive layers in float
    refit_prototypes: bool = True  # k-means the prototypes again on the INT8 encoder's features (refit.py)
    keep_float: tuple = ()  # node-name prefixes kept in float in every attempt (e.g. "/decoder/")
    # The first convolution and the nodes before it stay float unless this is set (quantize.input_layer)
    quantize_input_layer: bool = False
    # How fallbacks choose what to keep in float: "groups" measures each layer group's effect on the anomaly
    # map (one quantization per group); "sqnr" ranks single nodes by their local quantization noise (cheap).
    sensitivity: str = "groups"
    batch: Optional[int] = 1  # of the exported model; None = dynamic
    input_format: str = "float"
    channel_order: str = "rgb"
    input_hw: Optional[tuple] = None
    force_data: bool = False  # calibrate on data whose training normals differ from the checkpoint's
    nncf: NNCFSettings = field(default_factory=NNCFSettings)  # --flavour openvino only

    def validate(self) -> "CalibrationOptions":
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"--flavour {self.flavour!r}: choose one of {FLAVOURS}")
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {METHODS}")
        if self.sensitivity not in ("groups", "sqnr"):
            raise ConfigError(f"--sensitivity {self.sensitivity!r}: choose one of ['groups', 'sqnr']")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be >= 1")
        if not 0.5 <= self.cascade_agreement < 1:
            raise ConfigError(f"--cascade-agreement {self.cascade_agreement}: the share of parts a cascade decides as "
                              "FP32 does, from 0.5 to below 1 (e.g. 0.99)")
        if self.flavour == "openvino":
            if self.method != "minmax":
                raise ConfigError(f"--method {self.method}: NNCF (--flavour openvino) estimates ranges its own way; "
                                  "leave --method out")
            if self.sensitivity != "groups":
                raise ConfigError("--sensitivity sqnr reads ONNX Runtime's Q/DQ model; with --flavour openvino "
                                  "use --sensitivity groups")
            self.nncf.validate()
            check_installed()
        elif self.nncf != NNCFSettings():
            raise ConfigError(f"--nncf-* settings are NNCF's (--flavour openvino), not --flavour {self.flavour}'s")
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
    """Compare the two engines' results on the same validation set (one set's dicts from _evaluate)."""
    from ..verify import compare

    d = {k: int8[k] - fp32[k] for k in ("image_auroc", "pixel_auroc", "aupro")}
    # The one comparator's fields (decisions under the FP32 threshold) ... (every pixel in one vector: with input
    # policy tiles each map has its image's own size)
    c = compare(SimpleNamespace(**{**fp32, "maps": pixels(fp32["maps"])}),
                SimpleNamespace(**{**int8, "maps": pixels(int8["maps"])}))
    return {"fp32": {k: fp32[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
            "int8": {k: int8[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
            "delta": d,
            # ... and the gate's own: each artefact decides with its own threshold (INT8's: the FP32 threshold
            # moved by the median score change over the validation images); the agreement under the FP32 threshold
            # itself shows how much of the difference is a score shift.
            "decision_agreement": float(np.mean(fp32["decisions"] == int8["own_decisions"])),
            "decision_agreement_fp32_threshold": c["decision_agreement"],
            "int8_decision": int8["decision_params"],
            "map_correlation": c["map_correlation"],
            "max_abs_map_diff": c["max_abs_map_diff"],
            "score_mae": c["mean_abs_score_diff"],
            "images": fp32["images"], "anomalies": fp32["anomalies"],
            "comparison": c}


SET_SUMMARY = ("fp32", "int8", "delta", "decision_agreement", "decision_agreement_fp32_threshold", "map_correlation",
               "score_mae", "images", "anomalies")


def expected_agreement(fp32: dict, int8: dict, gate: str) -> dict:
    """The decision agreement INT8's score noise lets one expect at FP32's operating point.

    INT8 moves each image score by some noise (its standard deviation over every validation image, after the
    mean shift; the INT8 threshold moves with the median one). An image whose FP32 score lies |s - t| from the
    threshold t flips with probability Phi(-|s - t| / sigma); the expected agreement is one minus the mean flip
    probability over the gate set's FP32 scores. Unlike counting flips on a few dozen images, it does not read 1.000
    when no image happened to sit close to the threshold: on Magnetic Tile Defect 46 real-set images counted 1.000
    while the test set (573 images) agreed on 92.3%; this estimate, applied to the test set's FP32 scores, said
    90.8% (docs/openvino-int8.md)."""
    diffs = np.concatenate([np.asarray(int8[n]["scores"], float) - np.asarray(fp32[n]["scores"], float) for n in fp32])
    sigma = float(np.std(diffs))
    scores, t = np.asarray(fp32[gate]["scores"], float), float(fp32[gate]["threshold"])
    if sigma == 0.0:
        return {"expected_agreement": 1.0, "score_noise": 0.0}
    return {"expected_agreement": float(1.0 - np.mean(ndtr(-np.abs(scores - t) / sigma))), "score_noise": sigma}


CASCADE_MIN_SIGMAS = 1.0  # the cascade's margin is at least the score noise (see cascade_margin)


def cascade_margin(fp32: dict, gate: str, sigma: float, target: float) -> dict:
    """The margin around the INT8 threshold within which a cascade (runtime.cascade) lets the FP32 model decide:
    the smallest multiple of a quarter of the score noise that lets the gate set's FP32 scores expect `target`
    agreement with FP32, and at least the noise itself (CASCADE_MIN_SIGMAS). The expectation reads how densely the
    gate set's scores lie near the threshold; a set whose scores keep away from it (generated anomalies, a few
    dozen images) promises the target with a band too narrow for a line: on BSData zero-shot the synthetic gate set
    chose 0.25 sigma, and the 665 real test parts agreed on 98.5% (1.0 sigma: 99.1%, 2.9% of the parts re-decided).

    A part whose FP32 score lies d = |s - t| from the threshold is decided otherwise only when INT8 moves its score
    past the threshold and beyond the band, by more than d + m: probability Phi(-(d + m) / sigma). It is decided by
    FP32 when its INT8 score falls inside the band: Phi((d + m) / sigma) - Phi((d - m) / sigma), the share of parts
    that pay for both models."""
    scores, t = np.asarray(fp32[gate]["scores"], float), float(fp32[gate]["threshold"])
    d = np.abs(scores - t)
    for quarters in range(int(4 * CASCADE_MIN_SIGMAS), 4 * 6 + 1):
        m = quarters * sigma / 4
        expected = 1.0 if sigma == 0 else float(1.0 - np.mean(ndtr(-(d + m) / sigma)))
        if expected >= target:
            break
    rerun = 0.0 if sigma == 0 or m == 0 else float(np.mean(ndtr((d + m) / sigma) - ndtr((d - m) / sigma)))
    return {"margin": float(m), "target_agreement": target, "expected_agreement": expected, "expected_rerun": rerun}


def gate_metrics_by_set(fp32: dict, int8: dict, gate: str) -> dict:
    """gate_metrics on the set the gate judges (`gate`), and every set's own numbers under "sets" (real and
    synthetic reported apart; dicts of set name -> _evaluate results), and the expected agreement."""
    by_set = {name: gate_metrics(fp32[name], int8[name]) for name in fp32}
    return {**by_set[gate], "gate_set": gate, **expected_agreement(fp32, int8, gate),
            "sets": {name: {k: m[k] for k in SET_SUMMARY} for name, m in by_set.items()}}


def _evaluate(engine_path: Path, sets: dict, gate: str, threads: int = 0, reference: Optional[dict] = None) -> dict:
    """The engine's results on each validation set (name -> _Set), and its own decision parameters from the `gate`
    set (the training rule: the set the artefact's thresholds were chosen on), applied to every set; with a
    `reference` (the FP32 results), its image threshold is the reference's artefact threshold (the one its
    `decisions` use) moved by the median score change over every validation image (shift_matched_threshold;
    the threshold at the same rank on the gate images is reported beside it)."""
    from ..evaluate.metrics import aupro, auroc, pixel_auroc
    from ..runtime import open_engine
    from ..evaluate.thresholds import decision_params, rank_matched_threshold, shift_matched_threshold
    from ..runtime.preprocess import rgb_to_frames
    from ..tiling import predict_in_tiles

    out = {}
    with open_engine(engine_path, threads=threads or None) as eng:
        b = eng.input_spec.batch or 8

        def infer(images: list) -> tuple[np.ndarray, np.ndarray]:
            frames = rgb_to_frames(images, eng.input_spec)
            runs = [eng.infer(frames[i:i + b]) for i in range(0, len(frames), b)]
            return np.concatenate([r.maps for r in runs]), np.concatenate([r.scores for r in runs])

        for name, v in sets.items():
            # tiles: each image's map stitched at its own size, its score the highest tile's, as training validated
            maps, scores = infer(v.images) if v.tile_hw is None else predict_in_tiles(infer, v.images, v.tile_hw)
            threshold = float(eng.metadata["image_threshold"])
            out[name] = {"maps": maps, "scores": scores, "decisions": decide(scores, eng.metadata),
                         "threshold": threshold, "images": len(scores),
                         "anomalies": int(v.labels.sum()), "image_auroc": auroc(scores, v.labels),
                         "pixel_auroc": pixel_auroc(maps, v.masks), "aupro": aupro(maps, v.masks)}
    g = out[gate]
    own = decision_params(pixels(g["maps"]), g["scores"], pixels(sets[gate].masks), sets[gate].labels)
    if reference is not None:  # the reference's operating point, moved as the scores moved on every validation image
        t = reference[gate]["threshold"]
        own["image_threshold"] = shift_matched_threshold(
            np.concatenate([reference[n]["scores"] for n in out]), np.concatenate([out[n]["scores"] for n in out]), t)
        own["image_threshold_rank_matched"] = rank_matched_threshold(reference[gate]["scores"], t, g["scores"])
    for r in out.values():
        r["decision_params"], r["own_decisions"] = own, decide(r["scores"], own)
    return out


def _set_deltas(m: dict) -> dict:
    """Each validation set's INT8 - FP32 deltas of an attempt's metrics, the gate's set first (metrics without
    per-set numbers are one set)."""
    sets = m.get("sets") or {m.get("gate_set", "validation"): m}
    return {name: sets[name]["delta"] for name in sorted(sets, key=lambda n: n != m.get("gate_set"))}


def _one_swap(counts: dict) -> float:
    """The image AUROC one (anomaly, normal) pair changing order moves on a set: 1 / (anomalies x normals). On a
    user's handful of validation images (10 + 10: one point) it is above the tolerance, so one pair of near-tied
    scores would fail the gate; one swapped pair, like one flipped decision (_check), is tolerated."""
    pos = int(counts.get("anomalies") or 0)
    neg = int(counts.get("images") or 0) - pos
    return 1.0 / (pos * neg) + 1e-9 if pos > 0 and neg > 0 else 0.0


def _check(m: dict, o: CalibrationOptions) -> list[str]:
    """Why an attempt fails the gate (none: it passes). The AUROC drops must hold on every validation set: a few
    held-out real shots judge the decisions, and the generated anomalies, many more, still judge the map (on brick,
    4 real shots passed an INT8 map that lost 4.5 pt of pixel AUROC on the generated ones, map correlation 0.17).
    The decision agreement is the gate set's, where the thresholds were chosen."""
    reasons = []
    sets = _set_deltas(m)
    counts = m.get("sets") or {}
    for name, d in sets.items():
        where = f" on the {name} set" if len(sets) > 1 else ""
        allowed = max(o.max_image_auroc_drop, _one_swap(counts.get(name, m)))
        if -d["image_auroc"] > allowed:
            reasons.append(f"image AUROC drop {-100 * d['image_auroc']:.2f} pt > {100 * allowed:.2f}" + where)
        if -d["pixel_auroc"] > o.max_pixel_auroc_drop:
            reasons.append(f"pixel AUROC drop {-100 * d['pixel_auroc']:.2f} pt > {100 * o.max_pixel_auroc_drop:.2f}"
                           + where)
    images = int(m.get("images") or 0)
    floor = min(o.min_decision_agreement, 1.0 - 1.0 / images) if images > 1 else o.min_decision_agreement
    if m["decision_agreement"] < floor - 1e-9:  # one flip in 7 is 6/7 = 0.857142..., and 1 - 1/7 may round above it
        reasons.append(f"decision agreement {m['decision_agreement']:.3f} < {floor:.3f}")
    if m.get("expected_agreement", 1.0) < o.min_expected_agreement:
        reasons.append(f"expected agreement {m['expected_agreement']:.3f} < {o.min_expected_agreement} (INT8 moves "
                       f"scores by {m['score_noise']:.3f}, and FP32 scores lie that close to the threshold)")
    return reasons


def calibrate(ckpt: Path, data: Path, run: str, root: Path = Path("calibration"), options: CalibrationOptions | None = None,
              log: Callable[[str], None] = print, threads: int = 0) -> dict:
    o = (options or CalibrationOptions()).validate()
    t0 = time.time()
    final, tmp = _new_run_folder(Path(root), run)
    try:
        setup = _prepare(ckpt, data, tmp, o, log, threads)
        attempts, (q_best, a_best), ranking = _search(setup)
        speed = _keep_best(setup, q_best, a_best, run)
        report = new_manifest(
            CALIBRATION_RUN, run=run, toolkit_version=__version__, checkpoint=str(Path(ckpt).resolve()),
            data=str(Path(data).resolve()), options=asdict(o), passed=a_best.passed,
            chosen_attempt=attempts.index(a_best) + 1, attempts=[asdict(x) for x in attempts],
            sensitivity=ranking[:16], calibration_files=describe_files(setup.calib_paths),
            validation={"normals": [str(p.resolve()) for p in setup.val.paths],
                        "generated_anomalies": int(setup.val.sets["synthetic"].labels.sum()),
                        "real_defects": [str(Path(x.image).resolve()) for x in setup.val.real_shots],
                        "gate": setup.val.gate, "seed": setup.cfg.train.seed},
            artefacts=_artefacts(o.flavour),
            tensorrt_calibration_cache=_trt_cache_note() if o.flavour != "openvino" else "not for an OpenVINO run",
            speed_here=speed,
            seconds=round(time.time() - t0, 1),
        )
        write_manifest(tmp / RUN_MANIFEST, report)
        (tmp / "report.md").write_text(result_line(report) + attempts_table(report) + cascade_note(report))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(attempts_table(report) + cascade_note(report))
    log(f"{'PASSED' if report['passed'] else 'FAILED'}: {final / report['artefacts']['int8']} "
        f"(manifest {final / RUN_MANIFEST})")
    return report


def _int8_suffix(flavour: str) -> str:
    return ".xml" if flavour == "openvino" else ".onnx"


def _artefacts(flavour: str) -> dict:
    """The run's model files, and the runtime the INT8 one is for."""
    out = {"fp32": "model.fp32.onnx", "int8": f"model.int8{_int8_suffix(flavour)}"}
    if flavour == "openvino":
        return {**out, "int8_weights": "model.int8.bin", "int8_runtime": "openvino"}
    return {**out, "int8_runtime": "tensorrt" if flavour == "tensorrt" else "onnxruntime"}


def _new_run_folder(root: Path, run: str) -> tuple[Path, Path]:
    """The run's final folder (which must not exist yet) and the temporary one it is assembled in."""
    if not run or run in (".", "..") or Path(run).name != run or "\\" in run:
        raise ConfigError(f"--run {run!r}: a run is named by one folder name (letters, digits, - _ .), created under "
                          f"--root {root}; no path separators, '..' or absolute paths")
    final = root / run
    if final.exists():
        raise ConfigError(f"calibration run {final} exists already; choose another --run name or delete it")
    tmp = root / f".{run}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return final, tmp


@dataclass(frozen=True)
class _Set:
    """One validation set: images (RGB, model input size), masks, labels. With input policy tiles (`tile_hw`
    set) the images and masks keep their own sizes and are predicted in tiles (tiling.predict_in_tiles)."""

    images: list
    masks: Any  # (N, H, W), or a list of masks at each image's size (tiles)
    labels: np.ndarray
    tile_hw: Optional[tuple] = None


@dataclass(frozen=True)
class _Validation:
    """The validation split the gate measures every attempt on, as training built it: the held-out normals with a
    generated anomaly each ("synthetic") and, when the checkpoint held real defect shots out, the normals with
    those ("real"); the gate judges the set training chose its thresholds on. And the FP32 model's results."""

    paths: list  # the held-out normals
    sets: dict  # "synthetic"[, "real"] -> _Set
    gate: str  # the set the gate judges: "real" when there is one
    real_shots: list  # the held-out shots in the real set
    fp32: dict  # _evaluate of the FP32 model
    images: list  # the synthetic set at the model input (every tile of it with input policy tiles): what
    # sensitivity and speed are measured on


@dataclass(frozen=True)
class _Setup:
    """What every attempt of a run is made and measured with."""

    options: CalibrationOptions
    cfg: Config  # the checkpoint's
    tmp: Path  # the run folder being assembled
    fp32: Path  # the FP32 export, prepared for quantization
    spec: InputSpec  # its input
    calib_paths: list
    calib_batches: list  # the calibration set as model inputs
    fit_batches: Optional[list]  # the normals the prototypes were fitted on, for the INT8 refit (None: no refit)
    val: _Validation
    fixed: list  # nodes kept in float in every attempt (by design, the input layer, and --keep-float)
    input_layer_nodes: int  # of `fixed`, the input layer's (0 with --quantize-input-layer)
    threads: int
    log: Callable[[str], None]


def _prepare(ckpt: Path, data: Path, tmp: Path, o: CalibrationOptions, log: Callable[[str], None],
             threads: int) -> _Setup:
    """The checkpoint's training data (checked to be the data it was trained on), the calibration set, the FP32
    export and its results on the validation split."""
    from ..data.dataset import load_category
    from ..evaluate.validation import load_normals, model_inputs, split_normals
    from ..model.checkpoint import load_model

    _, cfg, meta = load_model(ckpt)
    if cfg.model.input_policy == "tiles":
        log("input policy tiles: calibration, prototype refit and the gate run on tiles at native resolution; "
            "each validation image's map is stitched from its tiles and its score is its highest tile's")
    cat = load_category(Path(data), num_shots=cfg.train.num_shots, seed=meta.get("data_seed", 0))
    fit_paths, val_paths = split_normals(cat, cfg.train)
    _check_training_data(ckpt, data, fit_paths + val_paths, meta.get("train_images_sha256"), o, log)
    train_shots, val_shots = _checkpoint_shots(cat, cfg, meta, ckpt, o, log)
    calib_paths = select_calibration_set(fit_paths, o.size, o.seed, train_shots, o.defects)
    fp32, spec = _export_fp32(ckpt, tmp, o, log)
    calib_batches = _model_inputs(model_inputs(load_normals(calib_paths, cfg)[0], cfg), spec)
    val = _validation(cfg, cat, val_paths, train_shots, val_shots, spec, fp32, threads)
    log("validation: " + ", ".join(f"{name} {len(v.images)} images ({int(v.labels.sum())} anomalies)"
                                   for name, v in val.sets.items())
        + f"; the gate judges the {val.gate} set; calibration: {len(calib_paths)} images")
    fixed = _kept_in_float(fp32, o)
    fit_batches = _model_inputs(model_inputs(load_normals(fit_paths, cfg)[0], cfg), spec) if o.refit_prototypes else None
    input_nodes = 0 if o.quantize_input_layer else len(input_layer(fp32))
    return _Setup(o, cfg, tmp, fp32, spec, calib_paths, calib_batches, fit_batches, val, fixed, input_nodes, threads,
                  log)


def _check_training_data(ckpt: Path, data: Path, paths: list, recorded: Optional[str], o: CalibrationOptions,
                         log: Callable[[str], None]) -> None:
    """Calibrating on another category or another copy makes an INT8 model for the wrong data: the training
    normals must hash as the checkpoint recorded, unless forced."""
    from ..artefact.files import files_sha256

    if recorded and files_sha256(paths) != recorded:
        if not o.force_data:
            raise ConfigError(f"{data}: its training normals are not the ones {ckpt} was trained on (data hash "
                              "differs): calibrating on another category or another copy makes an INT8 model "
                              "for the wrong data. Give the training folder, or pass --force-data")
        log(f"WARNING: {data} differs from the checkpoint's training data (hash); calibrating anyway (--force-data)")


def _checkpoint_shots(cat, cfg: Config, meta: dict, ckpt: Path, o: CalibrationOptions,
                      log: Callable[[str], None]) -> tuple[list, list]:
    """The real shots the checkpoint trained on and those it held out for validation, split as training split them
    (validation.split_shots); shots training took out of test/ (--shots-from-test) are found there again. They
    must be the shots the checkpoint recorded: other real defects would judge the gate on images the model may
    have trained on. Unless forced; then the gate has no real set."""
    from ..evaluate.validation import split_shots

    taken = {str(Path(p).resolve()) for p in meta.get("excluded_from_test", [])}
    shots = [x for x in cat.test if str(Path(x.image).resolve()) in taken] if taken else cat.shots
    train_shots, val_shots = split_shots(shots, cfg.train)
    if "shots" not in meta:  # a checkpoint from before the split was recorded
        return train_shots, val_shots
    if not shots and meta["shots"]:  # trained with --defects from another folder: nothing here to mistake
        log(f"WARNING: {ckpt} trained on real defect shots that are not in {cat.root} (no defects/ folder): the "
            "gate judges generated anomalies only; put those shots in the category's defects/ folder to gate on "
            "the real ones it held out")
        return [], []
    key = lambda paths: sorted(Path(p).resolve().parts[-2:] for p in paths)  # noqa: E731 (moved copies match)
    same = (key(meta["shots"]) == key(x.image for x in train_shots)
            and set(key(meta.get("validation_shots", []))) <= set(key(x.image for x in val_shots)))
    if same:
        return train_shots, val_shots
    what = (f"the real defect shots in {cat.root} are not the ones {ckpt} trained on and held out for validation "
            f"({len(meta['shots'])} + {len(meta.get('validation_shots', []))} recorded, {len(train_shots)} + "
            f"{len(val_shots)} here)")
    if not o.force_data:
        raise ConfigError(f"{what}: the gate would judge INT8 on real defects the model may have seen. Give the "
                          "category folder the checkpoint was trained on (its defects/ folder as it was), or pass "
                          "--force-data to gate on generated anomalies only")
    log(f"WARNING: {what}; the gate judges generated anomalies only (--force-data)")
    return train_shots, []


def _export_fp32(ckpt: Path, tmp: Path, o: CalibrationOptions, log: Callable[[str], None]) -> tuple[Path, InputSpec]:
    """model.fp32.onnx in the run folder, prepared for quantization, and its input spec."""
    from ..export.onnx_export import export_onnx

    log(f"exporting {ckpt} to FP32 ONNX")
    export_onnx(ckpt, tmp / "model.fp32.onnx", batch=o.batch, input_format=o.input_format,
                channel_order=o.channel_order, input_hw=o.input_hw)
    fp32 = prepare(tmp / "model.fp32.onnx", tmp / "model.fp32.onnx")
    return fp32, read_metadata(fp32)["input_spec"]


def _model_inputs(images: list, spec: InputSpec) -> list[np.ndarray]:
    """RGB images as the model's input batches for `spec` (an incomplete last batch is dropped)."""
    from ..runtime.preprocess import frames_to_model_input, rgb_to_frames

    frames = rgb_to_frames(images, spec)
    x = frames if spec.format == "uint8" else frames_to_model_input(frames, spec)
    b = spec.batch or 1
    return [x[i:i + b] for i in range(0, len(x) - len(x) % b, b)]


def _validation(cfg: Config, cat, paths: list, train_shots: list, val_shots: list, spec: InputSpec, fp32: Path,
                threads: int) -> _Validation:
    """The validation sets as training built them (evaluate.validation), and the FP32 model's results there."""
    from ..data.fit import defect_tile
    from ..evaluate.validation import (load_held_out_shots, load_normals, load_shot, model_inputs,
                                       real_validation_set, synth_foreground, tiled_validation_set, validation_set)

    tiles = cfg.model.input_policy == "tiles"
    normals, regions = load_normals(paths, cfg)
    shots = [load_shot(x, cfg) for x in train_shots]
    foreground, hw, seed = synth_foreground(cfg, cat), cfg.model.hw, cfg.train.seed
    if tiles:  # as training built it: each shot enters as one tile that holds its defect (trainer.train)
        shot_rng = np.random.default_rng(seed + 31)
        shots = [defect_tile(img, m, hw, shot_rng)[:2] for img, m in shots]
        sets = {"synthetic": tiled_validation_set(normals, cfg.synth, hw, shots, None, foreground, seed)}
    else:
        sets = {"synthetic": validation_set(normals, regions, cfg.synth, hw, shots, None, foreground, seed)}
    real, _ = load_held_out_shots(val_shots, cfg)
    if real:
        images, masks, labels = real_validation_set(normals, [(img, m) for _, img, m in real])
        sets["real"] = (images, masks if tiles else np.stack(masks), labels)

    sets = {name: _Set(*data, hw if tiles else None) for name, data in sets.items()}
    gate = "real" if "real" in sets else "synthetic"
    return _Validation(paths, sets, gate, [x for x, _, _ in real], _evaluate(fp32, sets, gate, threads),
                       model_inputs(sets["synthetic"].images, cfg))


def _kept_in_float(fp32: Path, o: CalibrationOptions) -> list[str]:
    """Nodes no attempt quantizes: those float by design, the input layer (unless --quantize-input-layer), and
    those under the --keep-float prefixes."""
    fixed = float_by_design(fp32) + ([] if o.quantize_input_layer else input_layer(fp32))
    if not o.keep_float:
        return sorted(set(fixed))
    import onnx

    chosen = [n.name for n in onnx.load(str(fp32)).graph.node if n.name.startswith(tuple(o.keep_float))]
    if not chosen:
        raise ConfigError(f"--keep-float {list(o.keep_float)}: no node name starts with these prefixes; "
                          "node names look like /encoder/_blocks.3/..., /msa.1/..., /decoder/up2/...")
    return sorted(set(fixed) | set(chosen))


def _search(s: _Setup) -> tuple[list[Attempt], tuple[Path, Attempt], list[dict]]:
    """Attempts until one passes the gate or max_attempts are made; after a failed one, the next keeps more of
    the most sensitive layers in float. Returns every attempt, the best (its model and attempt) and the
    sensitivity ranking."""
    candidates = [n for n in quantizable_nodes(s.fp32, s.options.flavour) if n not in s.fixed]
    attempts: list[Attempt] = []
    excluded: list[str] = []
    ranking: list[dict] = []
    groups: dict = {}
    best = None
    for a in range(s.options.max_attempts):
        q_path, attempt = _attempt(s, a, excluded)
        attempts.append(attempt)
        if best is None or _rank(attempt, s.options) > _rank(best[1], s.options):
            best = (q_path, attempt)
        if attempt.passed or a + 1 >= s.options.max_attempts:
            break
        if not ranking:
            ranking, groups = _sensitivity(s, q_path, candidates)
        excluded = _next_excluded(s, a, ranking, groups)
    return attempts, best, ranking


def _attempt(s: _Setup, a: int, excluded: list[str]) -> tuple[Path, Attempt]:
    """Quantize with `excluded` (and the fixed nodes) in float, refit the prototypes, and gate it against FP32."""
    o = s.options
    ta = time.time()
    q_path = s.tmp / f"model.int8.try{a}{_int8_suffix(o.flavour)}"
    qinfo = _quantize(s, q_path, s.fixed + excluded)
    qinfo["float_by_design"] = len(s.fixed)
    qinfo["input_layer_float"] = s.input_layer_nodes  # nodes, within the above
    if s.fit_batches is not None:
        qinfo["prototypes_refit"] = _refit(s, q_path, s.fixed + excluded)
    m = gate_metrics_by_set(s.val.fp32, _evaluate(q_path, s.val.sets, s.val.gate, s.threads, reference=s.val.fp32),
                            s.val.gate)
    m["cascade"] = cascade_margin(s.val.fp32, s.val.gate, m["score_noise"], o.cascade_agreement)
    reasons = _check(m, o)
    s.log(f"attempt {a + 1}: {len(excluded)} layers in float; "
          + "; ".join(f"{name}{' (gate)' if name == s.val.gate else ''}: image AUROC "
                      f"{100 * x['fp32']['image_auroc']:.2f} -> {100 * x['int8']['image_auroc']:.2f}, pixel AUROC "
                      f"{100 * x['fp32']['pixel_auroc']:.2f} -> {100 * x['int8']['pixel_auroc']:.2f}, agreement "
                      f"{x['decision_agreement']:.3f}" for name, x in m["sets"].items())
          + ": " + ("PASS" if not reasons else "; ".join(reasons)))
    return q_path, Attempt(list(excluded), qinfo, m, not reasons, round(time.time() - ta, 1), reasons)


def _quantize(s: _Setup, out: Path, exclude: list[str], source: Optional[Path] = None) -> dict:
    """The run's INT8 model of `source` (default: the FP32 export) with `exclude` in float, in its flavour."""
    o = s.options
    if o.flavour == "openvino":
        from ..export.openvino_export import ir_metadata

        return quantize_nncf(source or s.fp32, out, s.spec.name, s.calib_batches, exclude, meta=ir_metadata(s.fp32),
                             settings=o.nncf)
    return quantize_qdq(source or s.fp32, out, s.spec.name, s.calib_batches, o.flavour, o.method, exclude)


def _refit(s: _Setup, q_path: Path, exclude: list[str]) -> dict:
    """Prototypes re-fitted on the INT8 model's own features (refit.py). A Q/DQ ONNX takes them in place. NNCF's
    IR is not edited: the prototypes fitted on its features go into the FP32 graph, which is quantized again, so
    the head's ranges are also measured with the prototypes it runs with (the encoder before the prototype search
    quantizes the same: same graph, same calibration images)."""
    kw = dict(mode=s.cfg.model.prototype_mode, softness=s.cfg.model.prototype_softness, seed=s.cfg.train.seed,
              threads=s.threads)
    if s.options.flavour != "openvino":
        return refit_prototypes(q_path, q_path, s.fit_batches, **kw)
    refitted = s.tmp / "model.fp32.refit.onnx"
    report = refit_prototypes(s.fp32, refitted, s.fit_batches, features_from=q_path, **kw)
    _quantize(s, q_path, exclude, source=refitted)
    refitted.unlink()
    return report


def _sensitivity(s: _Setup, q_path: Path, candidates: list[str]) -> tuple[list[dict], dict]:
    """The candidates ranked by how much quantizing them costs, most sensitive first, and (for "groups") the
    nodes of each layer group."""
    o = s.options
    if o.sensitivity == "groups":
        groups = dict(layer_groups(s.fp32, candidates))
        sample = _model_inputs(s.val.images[::max(1, len(s.val.images) // 8)][:8], s.spec)
        ranking = rank_sensitive_groups(
            s.fp32, s.spec.name, s.calib_batches, sample, list(groups.items()),
            lambda out, exclude: _quantize(s, out, exclude), s.fixed, log=s.log,
            suffix=_int8_suffix(o.flavour))
        return ranking, groups
    return [r for r in rank_sensitive_nodes(s.fp32, q_path, s.spec.name, s.calib_batches[:8])
            if r["node"] in candidates], {}


def _next_excluded(s: _Setup, a: int, ranking: list[dict], groups: dict) -> list[str]:
    """What attempt a + 2 keeps in float: the 2**a most sensitive layer groups, or the 2**(a+1) nodes (sqnr)."""
    if s.options.sensitivity == "groups":
        excluded = [n for r in ranking[:2 ** a] for n in groups[r["group"]]]
        s.log(f"next attempt keeps in float: {[r['group'] for r in ranking[:2 ** a]]}")
        return excluded
    return [r["node"] for r in ranking[:2 ** (a + 1)]]


def _keep_best(s: _Setup, q_best: Path, a_best: Attempt, run: str) -> dict:
    """The best attempt becomes model.int8.onnx, carrying its own thresholds and its gate's result; the others
    go. Returns FP32 vs INT8 speed on this machine."""
    _set_decision(q_best, a_best.metrics["int8_decision"], run, a_best.passed, a_best.metrics["cascade"]["margin"])
    int8 = s.tmp / _artefacts(s.options.flavour)["int8"]
    if int8.suffix == ".xml":
        from ..artefact.openvino_ir import weights_of

        weights_of(q_best).rename(weights_of(int8))
    q_best.rename(int8)
    speed = _speed(s.tmp / "model.fp32.onnx", int8, s.val.images[:8], s.threads)
    runtime = "OpenVINO" if int8.suffix == ".xml" else "ONNX Runtime"
    s.log(f"speed on this machine (CPU, batch 1, interleaved rounds): FP32 (ONNX Runtime) {speed['fp32_ms']:.2f} ms, "
          f"INT8 ({runtime}) {speed['int8_ms']:.2f} ms (medians over all rounds), speed-up x{speed['speedup']:.2f} "
          "(median of the per-round ratios: fair when the machine's speed drifts)"
          + ("" if speed["vnni"] else " (this CPU has no VNNI: its int8 kernels gain little over float)"))
    if s.options.flavour == "cpu" and speed["speedup"] < 1.2:
        s.log("advice: INT8 buys less than 1.2x on this machine; deploy the FP32 model here, or this run's "
              "model on a CPU with VNNI (re-measure there: `prn-edge bench`)")
    for f in s.tmp.glob("model.int8.try*"):
        f.unlink()
    return speed


def _speed(fp32: Path, int8: Path, images: list, threads: int = 0) -> dict:
    """FP32 vs INT8 latency of the two artefacts here (each on its runtime: an IR on OpenVINO), taking turns
    (see bench.throughput.run_bench)."""
    from ..bench.throughput import Artefact, run_bench
    from .quantize import cpu_has_vnni

    # the run measures its own result, whatever its gate said
    r = run_bench([Artefact(fp32, "fp32"), Artefact(int8, "int8", allow_failed_gate=True)], images, iters=30, warmup=3, rounds=3,
                  threads=threads or None, agreement_images=len(images), progress=False, log=lambda m: None)
    f, q = r["results"]
    return {"fp32_ms": f["latency_ms"]["p50"], "int8_ms": q["latency_ms"]["p50"],
            "speedup": q["speedup_vs_reference"], "vnni": cpu_has_vnni(), "threads": threads or None}


def _set_decision(path: Path, params: dict, run: str, passed: bool, cascade_margin: float) -> None:
    """The INT8 artefact carries its own decision parameters from its validation scores (the image threshold: the
    FP32 threshold moved as the scores moved; the pixel threshold and score spread by the training rule; see
    _evaluate), the result of its accuracy gate (run, bench and build refuse a failed one unless told otherwise)
    and the margin a cascade with its FP32 model uses (cascade_margin)."""
    import onnx

    values = {"image_threshold": params["image_threshold"], "pixel_threshold": params["pixel_threshold"],
              "score_spread": params["score_spread"], "calibration_run": run,
              "accuracy_gate": "passed" if passed else "failed", "cascade_margin": cascade_margin}
    if path.suffix == ".xml":
        from ..export.openvino_export import update_ir_metadata

        return update_ir_metadata(path, values)
    m = onnx.load(str(path))
    write_metadata(m, values)
    onnx.save(m, str(path))


def _rank(a: Attempt, o: CalibrationOptions) -> tuple:
    """How close an attempt came to the gate, for keeping the best one: a pass first, then the AUROC drops beyond
    their tolerances, then the decision agreement, then the drops themselves. Drops within tolerance come last: an
    attempt that only fails on agreement is not worse than one that fails on agreement by more but keeps a tenth
    of a point more pixel AUROC."""
    d = a.metrics["delta"]
    image, pixel = max(0.0, -d["image_auroc"]), max(0.0, -d["pixel_auroc"])
    excess = sum(max(0.0, -x["image_auroc"] - o.max_image_auroc_drop)
                 + max(0.0, -x["pixel_auroc"] - o.max_pixel_auroc_drop) for x in _set_deltas(a.metrics).values())
    agreement = min(a.metrics["decision_agreement"], a.metrics.get("expected_agreement", 1.0))
    return (a.passed, -excess, agreement, -(image + pixel))


def _trt_cache_note() -> str:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "not written: TensorRT is not installed here (write it on the target with `prn-edge build --precision int8 --calibration RUN`)"
    return "written by `prn-edge build --precision int8 --implicit-int8 --calibration RUN` on the TensorRT host"


def result_line(report: dict) -> str:
    """The run's outcome above its table: passed or failed, which attempt, and INT8's speed-up here."""
    speed = report["speed_here"]
    return (f"# {report['run']}: {'PASSED' if report['passed'] else 'FAILED'} (attempt {report['chosen_attempt']} of "
            f"{len(report['attempts'])} kept; INT8 x{speed['speedup']:.2f} against FP32 on this machine)\n\n")


def cascade_note(report: dict) -> str:
    """What a cascade of the run's models (runtime.cascade) is to expect, from the chosen attempt's validation."""
    c = report["attempts"][report["chosen_attempt"] - 1]["metrics"]["cascade"]
    return (f"\nCascade (engine backend `cascade`: {report['artefacts']['int8']} screens every part, "
            f"{report['artefacts']['fp32']} decides those whose INT8 score lies within {c['margin']:.3f} of the "
            f"threshold): expected agreement with FP32 {c['expected_agreement']:.3f} (target "
            f"{c['target_agreement']}), {100 * c['expected_rerun']:.0f}% of the validation parts run FP32 too.\n")


def attempts_table(report: dict) -> str:
    """One row per attempt and validation set; the gate's set first, with the attempt's result."""
    rows = ["| attempt | float layers | set | image AUROC fp32 -> int8 | pixel AUROC fp32 -> int8 | agreement | "
            "agreement at fp32 thr | expected agreement (score noise) | map corr | result |",
            "|---|---:|---|---|---|---:|---:|---:|---:|---|"]
    for i, a in enumerate(report["attempts"], 1):
        gate = a["metrics"]["gate_set"]
        e = a["metrics"].get("expected_agreement")
        expected = f"{e:.3f} ({a['metrics']['score_noise']:.3f})" if e is not None else "-"
        for name in sorted(a["metrics"]["sets"], key=lambda n: n != gate):
            m = a["metrics"]["sets"][name]
            result = ("pass" if a["passed"] else "fail: " + "; ".join(a["reasons"])) if name == gate else "(reported)"
            rows.append(f"| {i} | {len(a['excluded'])} | {name} ({m['images']} images) "
                        f"| {100 * m['fp32']['image_auroc']:.2f} -> {100 * m['int8']['image_auroc']:.2f} "
                        f"| {100 * m['fp32']['pixel_auroc']:.2f} -> {100 * m['int8']['pixel_auroc']:.2f} "
                        f"| {m['decision_agreement']:.3f} | {m['decision_agreement_fp32_threshold']:.3f} "
                        f"| {expected if name == gate else ''} | {m['map_correlation']:.4f} | {result} |")
    return "\n".join(rows) + "\n"

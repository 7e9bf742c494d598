"""The calibrator step, implicit INT8 for TensorRT 8.5-10.x: an entropy calibrator fed from a `prn-edge calibrate`
run. The builder takes the run's folder (its manifest and images), never the calibrate package: calibrate sits
above this one, since it runs engines to measure accuracy.

The run folder (calibration/<run>/) lists its calibration images in manifest.json ("calibration_files": path,
bytes, sha256 per image; prn_edge.calibrate.dataset.describe_files). The calibrator reads exactly those
images and preprocesses them the way the calibration run fed ONNX Runtime: read_image -> rgb_to_frames for
the ONNX's input spec -> (float inputs) frames_to_model_input, in batches of the engine's calibration batch.

TensorRT's calibration cache is kept in the run folder, named per TensorRT version and ONNX, so a second
build (or a build on another Jetson with the same TensorRT) reuses it without the images. The cache that
TensorRT hands back is held in memory and written only after the engine itself was written.

API (TensorRT Python, 8.x/10.x): subclass tensorrt.IInt8EntropyCalibrator2 and implement get_batch_size(),
get_batch(names) -> list of device pointers or None when done, read_calibration_cache() -> bytes or None,
write_calibration_cache(cache) (IInt8EntropyCalibrator2 docs, TensorRT 8.6 C++ reference; EntropyCalibrator2
is the one DLA requires). TensorRT 11 removed the calibrators (migration guide 10.x -> 11.x, "Removed Python
APIs": IBuilderConfig.int8_calibrator -> explicit quantization with Q/DQ nodes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..artefact import RUN_MANIFEST, InputSpec, ManifestError, read_calibration_manifest, sha256_file
from ..errors import BuildError
from .profiles import set_calibration_profile


def read_calibration_run(run_dir: str | Path) -> dict:
    """The manifest of a calibration run folder (prn_edge.artefact.manifest); BuildError when it is not one."""
    try:
        return read_calibration_manifest(run_dir)
    except ManifestError as e:
        raise BuildError(str(e)) from None


def is_calibration_run(path: str | Path) -> bool:
    try:
        read_calibration_run(path)
    except BuildError:
        return False
    return True


def calibration_files(run_dir: str | Path, check_hashes: bool = True) -> list[Path]:
    """The run's calibration images, checked to exist and (by sha256) to be the images the run used."""
    run_dir = Path(run_dir)
    manifest = read_calibration_run(run_dir)
    files = []
    for entry in manifest["calibration_files"]:
        p = Path(entry["path"])
        if not p.is_absolute():
            p = run_dir / p
        if not p.is_file():
            raise BuildError(f"calibration image {p} (listed in {run_dir / RUN_MANIFEST}) is missing on this host: "
                             "copy the images to the same paths, build the run's explicit Q/DQ model "
                             f"({run_dir / 'model.int8.onnx'}) instead, or bring the TensorRT calibration cache")
        if check_hashes and entry.get("sha256") and sha256_file(p) != entry["sha256"]:
            raise BuildError(f"calibration image {p} changed since calibration run {run_dir.name} (sha256 differs "
                             "from its manifest): restore it or calibrate again")
        files.append(p)
    if not files:
        raise BuildError(f"calibration run {run_dir} lists no images")
    return files


def calibration_batches(run_dir: str | Path, spec: InputSpec, batch: int) -> list[np.ndarray]:
    """The run's images as model-input batches for `spec`: uint8 (b, H, W, C) frames for uint8 artefacts,
    float32 (b, 3, Hm, Wm) RGB in [0, 1] at the model input for float ones; an incomplete last batch is dropped."""
    from ..data.images import read_image
    from ..runtime.preprocess import frames_to_model_input, rgb_to_frames

    if batch < 1:
        raise BuildError(f"calibration batch {batch} must be >= 1")
    paths = calibration_files(run_dir)
    frames = rgb_to_frames([read_image(p) for p in paths], spec)
    x = frames if spec.format == "uint8" else frames_to_model_input(frames, spec)
    batches = [np.ascontiguousarray(x[i:i + batch]) for i in range(0, len(x) - len(x) % batch, batch)]
    if not batches:
        raise BuildError(f"calibration run {Path(run_dir).name} has {len(x)} images, fewer than one calibration "
                         f"batch of {batch}; lower the optimisation profile's opt batch or calibrate with more images")
    return batches


def cache_name(tensorrt_version: str, onnx_sha256: str) -> str:
    major_minor = ".".join(str(tensorrt_version).split(".")[:2])
    return f"tensorrt-{major_minor}-{onnx_sha256[:12]}.calib.cache"


def calibration_record(art: Any, target: Any, plan: dict, batch: Any) -> Optional[dict]:
    """How INT8 got its scales and from which calibration run, for the manifest (None without a run)."""
    if plan["int8"] == "implicit":
        info = {"mode": "implicit_entropy2", "cache": cache_name(target.version, art.sha256),
                "batch": batch.calibration}
    elif art.run_dir is not None:
        info = {"mode": "explicit_qdq" if art.qdq else "recorded"}
    else:
        return None
    run_manifest = read_calibration_run(art.run_dir)
    info.update({"run": str(art.run_dir.resolve()), "name": art.run_dir.name,
                 "manifest_sha256": sha256_file(art.run_dir / RUN_MANIFEST),
                 "images": len(run_manifest.get("calibration_files", [])), "passed": run_manifest.get("passed")})
    return info


def implicit_calibrator(trt: Any, builder: Any, config: Any, req: Any, art: Any, target: Any, net: Any, batch: Any,
                        cache: Path) -> Any:
    """Implicit INT8 (8.5 .. 10.x): the entropy calibrator in the config, fed from the calibration run's images
    unless TensorRT's cache for this version and ONNX is there already."""
    batches = None
    if cache.is_file():
        req.log(f"implicit INT8: reusing calibration cache {cache}")
    else:
        batches = calibration_batches(art.run_dir, art.spec, batch.calibration)
        req.log(f"implicit INT8: {len(batches)} batches of {batch.calibration} from calibration run "
                f"{art.run_dir.name}")
    calibrator = make_entropy_calibrator(trt, batches=batches, batch_size=batch.calibration, cache_path=cache,
                                         cuda=target.cuda, log=req.log)
    config.int8_calibrator = calibrator
    set_calibration_profile(builder, config, net, batch)
    return calibrator


def make_entropy_calibrator(trt: Any, *, batches: Optional[Sequence[np.ndarray]], batch_size: int,
                            cache_path: Path, cuda: Any, log: Callable[[str], None] = print):
    """An IInt8EntropyCalibrator2 of this TensorRT module. batches: None when the cache is to be used.

    After the build: `.error` holds an exception raised inside a callback (TensorRT only sees "no batch"),
    `.new_cache` the cache TensorRT produced (bytes, to be written by the caller), `.batches_served` the count.
    Call `.free()` to release the device buffer.
    """
    base = trt.IInt8EntropyCalibrator2

    class PrnEntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            base.__init__(self)
            self.batches = list(batches) if batches is not None else []
            self.batch_size = int(batch_size)
            self.cache_path = Path(cache_path)
            self.cuda = cuda
            self.stream = None
            self.dptr = None
            self.nbytes = 0
            self.index = 0
            self.batches_served = 0
            self.error: Optional[BaseException] = None
            self.new_cache: Optional[bytes] = None
            self.cache_used = False

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            try:
                if self.index >= len(self.batches):
                    return None
                x = np.ascontiguousarray(self.batches[self.index])
                if self.dptr is None or x.nbytes > self.nbytes:
                    if self.dptr is not None:
                        self.cuda.free(self.dptr)
                    self.nbytes = max(int(b.nbytes) for b in self.batches)
                    self.dptr = self.cuda.malloc(self.nbytes)
                    self.stream = self.stream or self.cuda.stream()
                self.cuda.htod(self.dptr, x, x.nbytes, self.stream)
                self.cuda.sync(self.stream)
                self.index += 1
                self.batches_served += 1
                if self.index == 1 or self.index == len(self.batches) or self.index % 8 == 0:
                    log(f"  calibration batch {self.index}/{len(self.batches)}")
                return [int(self.dptr)]
            except BaseException as e:  # never let an exception cross into TensorRT
                self.error = e
                return None

        def read_calibration_cache(self):
            try:
                if self.cache_path.is_file():
                    self.cache_used = True
                    return self.cache_path.read_bytes()
            except OSError as e:
                self.error = e
            return None

        def write_calibration_cache(self, cache):
            try:
                self.new_cache = bytes(cache)
            except BaseException as e:
                self.error = e

        def free(self):
            if self.dptr is not None:
                try:
                    self.cuda.free(self.dptr)
                finally:
                    self.dptr = None
            if self.stream is not None and hasattr(self.cuda, "stream_free"):
                self.cuda.stream_free(self.stream)
                self.stream = None

    return PrnEntropyCalibrator()

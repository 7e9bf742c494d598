"""INT8 for OpenVINO: NNCF's post-training quantization of an exported PRN, written as an OpenVINO IR.

The FP32 ONNX becomes an openvino.Model, and NNCF places FakeQuantize operations where OpenVINO's CPU plugin runs
int8 kernels (its low-precision transformations fuse them into the convolutions). Quantizing the openvino.Model,
not the ONNX: on a shared 2-core x86 without VNNI (prn-edge, 256x256, batch 1, 2 threads) NNCF's IR ran 1.6x
OpenVINO FP32, NNCF's ONNX backend's Q/DQ model converted to an IR 1.3x.

What stays in float is named as in the ONNX (the keep-in-float record, sensitivity groups, --keep-float), and
`ignored_names` finds the openvino.Model's operations of each ONNX node: OpenVINO names an operation after the ONNX
node it comes from, the parts an ONNX node is split into carry that name as a prefix (a Conv with bias becomes
".../Conv/WithoutBiases" + ".../Conv"), and the last part keeps the node's output tensor name.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from .quantize import _quiet

NOT_INSTALLED = ("--flavour openvino quantizes with NNCF and OpenVINO: pip install '.[openvino]' in the prn-edge "
                 "source folder (or pip install nncf openvino)")


@dataclass(frozen=True)
class NNCFSettings:
    """NNCF's accuracy settings (`prn-edge calibrate --flavour openvino`); the defaults are NNCF's own. On MTD
    (docs/openvino-int8.md, 2026-12-03) both moved INT8 closer to FP32; the "mixed" preset and 4x the calibration
    images did not, so they are not offered."""

    fast_bias_correction: bool = True  # False: NNCF's full bias correction (slower to quantize)
    # SmoothQuant on MatMul: None = off; an alpha (0..1] moves that share of the activations' outliers into the
    # weights. NNCF runs it only for transformer models, so this also quantizes the model as one.
    smooth_quant_alpha: Optional[float] = None

    def validate(self) -> "NNCFSettings":
        if self.smooth_quant_alpha is not None and not 0 < self.smooth_quant_alpha <= 1:
            raise ConfigError(f"--nncf-smooth-quant {self.smooth_quant_alpha}: an alpha within (0, 1]")
        return self


def check_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        raise ConfigError(NOT_INSTALLED)


def ignored_names(model, onnx_graph, exclude: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the openvino.Model's operations that come from the ONNX nodes named in `exclude`, sorted; the names of
    `exclude` that match no operation, e.g. nodes OpenVINO folded into constants)."""
    outputs = {n.name: set(n.output) for n in onnx_graph.node}
    ops = [(op.get_friendly_name(), {t for o in op.outputs() for t in o.get_names()})
           for op in model.get_ordered_ops() if op.get_type_name() not in ("Constant", "Parameter", "Result")]
    found, unmatched = set(), []
    for name in dict.fromkeys(exclude):
        hits = {f for f, tensors in ops if f == name or f.startswith(name + "/") or tensors & outputs.get(name, set())}
        found |= hits
        if not hits:
            unmatched.append(name)
    return sorted(found), unmatched


def quantize_nncf(fp32: Path, out: Path, input_name: str, batches: Sequence[np.ndarray], exclude: Iterable[str] = (),
                  meta: Optional[dict] = None, settings: NNCFSettings = NNCFSettings()) -> dict:
    """Write an INT8 OpenVINO IR of the ONNX `fp32` to `out` (.xml + .bin): NNCF's performance preset (symmetric
    int8, per-channel weights) with `settings` (by default NNCF's: fast bias correction, no SmoothQuant), ranges from
    every image of `batches`, the nodes of `exclude` (ONNX node names) in float. The IR carries `meta` (default:
    the ONNX's prn_edge metadata)."""
    import onnx

    check_installed()
    import nncf

    from ..export.openvino_export import convert_onnx, ir_metadata, save_ir

    model = convert_onnx(fp32)
    exclude = sorted(set(exclude))
    names, unmatched = ignored_names(model, onnx.load(str(fp32), load_external_data=False).graph, exclude)
    images = int(sum(len(b) for b in batches))
    with _quiet(), _quiet_nncf():
        q = nncf.quantize(model, nncf.Dataset(list(batches), lambda x: {input_name: x}), subset_size=images,
                          ignored_scope=nncf.IgnoredScope(names=names, validate=False), **_nncf_arguments(settings))
    save_ir(q, out, {**(meta if meta is not None else ir_metadata(fp32)), "precision": "int8 (NNCF)"})
    types = [op.get_type_name() for op in q.get_ordered_ops()]
    return {"flavour": "openvino", "method": "nncf", "tool": f"nncf {nncf.__version__}", "preset": "performance",
            **asdict(settings), "target_device": "ANY", "subset_size": images, "excluded": exclude,
            "ignored_openvino_ops": len(names), "excluded_without_openvino_op": unmatched,
            "fake_quantize_nodes": types.count("FakeQuantize")}


def _nncf_arguments(settings: NNCFSettings) -> dict:
    """nncf.quantize's arguments for `settings`."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    kw = {"preset": nncf.QuantizationPreset.PERFORMANCE, "fast_bias_correction": settings.fast_bias_correction}
    if settings.smooth_quant_alpha is not None:
        kw["model_type"] = nncf.ModelType.TRANSFORMER
        kw["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=settings.smooth_quant_alpha))
    return kw


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs every node it skips at INFO and draws progress bars; errors still show."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

"""Evaluation: exact AUROC / AP / F1-max / AUPRO (MVTec AD protocol) and reports of the results.

metrics: numbers from scores, maps and masks. report: Markdown, JSON, official-layout TIFF maps,
overlay panels and curve plots. Neither touches torch, so evaluation runs wherever numpy does.
thresholds: the decision parameters chosen on validation predictions (numpy too). validation (the protocol
training and calibration share) and checkpoint_eval run the PyTorch model; import them by name.

The names below are loaded on first use: the appliance (no scipy, no tifffile) imports overlay and naming for its
heat-map pictures (`prn-edge predict`), and the metrics need scipy.
"""
import importlib

_FROM = {"metrics": ("UndefinedMetricError", "aupro", "auroc", "average_precision", "evaluate_predictions",
                     "f1_max", "pixel_auroc", "pro_curve", "roc_curve"),
         "report": ("markdown_table", "overlay", "save_maps_tiff", "save_overlays", "write_json")}
_WHERE = {name: module for module, names in _FROM.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value

"""Evaluation: exact AUROC / AP / F1-max / AUPRO (MVTec AD protocol) and reports of the results.

metrics: numbers from scores, maps and masks. report: Markdown, JSON, official-layout TIFF maps,
overlay panels and curve plots. Neither touches torch, so evaluation runs wherever numpy does.
thresholds: the decision parameters chosen on validation predictions (numpy too). validation (the protocol
training and calibration share) and checkpoint_eval run the PyTorch model; import them by name.
"""
from .metrics import (UndefinedMetricError, aupro, auroc, average_precision, evaluate_predictions,
                      f1_max, pixel_auroc, pro_curve, roc_curve)
from .report import markdown_table, overlay, save_maps_tiff, save_overlays, write_json

__all__ = ["UndefinedMetricError", "aupro", "auroc", "average_precision", "evaluate_predictions",
           "f1_max", "pixel_auroc", "pro_curve", "roc_curve", "markdown_table", "overlay",
           "save_maps_tiff", "save_overlays", "write_json"]

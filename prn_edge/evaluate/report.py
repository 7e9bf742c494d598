"""Turning evaluation results into files: Markdown table, JSON, TIFF maps, overlays, curve plots."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..artefact.files import write_json  # noqa: F401 - the report writer, re-exported
from ..errors import DataError
from .naming import component, sample_id
from .overlay import OverlayItem, overlay, save_overlays  # noqa: F401  (re-exported)

__all__ = ["markdown_table", "write_json", "save_maps_tiff", "overlay", "save_overlays",
           "OverlayItem", "roc_plot", "pro_plot"]

_COLUMNS = (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"),
            ("AUPRO", "aupro"), ("pixel AP", "pixel_ap"))


def markdown_table(results: dict) -> str:
    """Rows per defect type, then means over seen / unseen / all types, then the pooled overall row.

    `results` is what metrics.evaluate_predictions returns; numbers are percentages with one
    decimal, undefined ones a dash. A mean row's n is the number of defect images it covers.
    """
    head = ["defect type", "seen", "n"] + [c for c, _ in _COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]

    def row(name: str, seen: str, n: Any, values: dict) -> None:
        cells = [name.replace("|", "\\|"), seen, str(n)] + [_pct(values.get(k)) for _, k in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")

    per_type = results.get("per_type", {})
    for t, e in per_type.items():
        row(t, {True: "seen", False: "unseen"}.get(e.get("seen"), "-"), e.get("n", ""), e)
    for group in ("seen", "unseen", "all"):
        m = results.get("means", {}).get(group)
        if not m or not m.get("n_types"):
            continue
        # "all" duplicates the only other group when every type is seen (or unseen) -- still shown,
        # so tables from different runs always have the same final rows.
        members = [e for e in per_type.values() if group == "all" or e.get("seen") is (group == "seen")]
        row(f"mean ({group}, {m['n_types']} types)", group if group != "all" else "-",
            sum(e.get("n", 0) for e in members), m)
    if "overall" in results:
        o = results["overall"]
        row("overall (pooled)", "-", o.get("n_anomalous", ""), o)
        if o.get("n_anomalous_without_mask"):
            lines.append(f"\n{o['n_anomalous_without_mask']} defect images have no mask: they count in the image "
                         "metrics, not in the pixel metrics or AUPRO")
    return "\n".join(lines) + "\n"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100.0 * v:.1f}"


def save_maps_tiff(out_dir, category: str, samples: Sequence[Any], maps: Sequence[np.ndarray],
                   size: Union[Tuple[int, int], Sequence[Tuple[int, int]], None] = None) -> List[Path]:
    """One float32 TIFF per test image at <out_dir>/<category>/test/<defect_type>/<stem>.tiff.

    That is the layout the official MVTec AD evaluate_experiment.py reads (anomaly_maps_dir /
    object / 'test' / defect / stem + '.tiff'). It compares maps pixel by pixel with the
    full-resolution ground truth, so pass size=(H, W) of the original images (or one (H, W) per
    image) to upsample bilinearly. Samples: see naming.sample_id (data.dataset.Sample works).
    """
    import tifffile  # the workstation's (train extra); an appliance imports this package for its pictures only

    samples = list(samples)
    if len(samples) != len(maps):
        raise DataError(f"{len(samples)} samples but {len(maps)} anomaly maps")
    sizes = [size] * len(samples) if size is None or np.ndim(size) == 1 else list(size)
    if len(sizes) != len(samples):
        raise DataError(f"{len(sizes)} sizes for {len(samples)} anomaly maps")
    root = Path(out_dir) / component(category, "category") / "test"
    written, seen = [], set()
    for sample, amap, hw in zip(samples, maps, sizes):
        defect, stem = sample_id(sample)
        if (defect, stem) in seen:
            raise DataError(f"two test images map to {defect}/{stem}.tiff; stems must be unique per defect type")
        seen.add((defect, stem))
        a = np.squeeze(np.asarray(amap, dtype=np.float32))
        if a.ndim != 2:
            raise DataError(f"anomaly map for {defect}/{stem}: expected 2-D, got shape {a.shape}")
        if hw is not None and a.shape != tuple(hw):
            a = cv2.resize(a, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_LINEAR)
        p = root / defect / f"{stem}.tiff"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, np.ascontiguousarray(a, dtype=np.float32))
        written.append(p)
    return written


def _figure():
    # Figure without pyplot: no global state, no GUI backend, safe in worker threads.
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.5, 4.0), dpi=100)
    return fig, fig.add_subplot(1, 1, 1)


def roc_plot(path, fpr: np.ndarray, tpr: np.ndarray, title: str = "", label: str = "") -> Path:
    """PNG of a ROC curve (e.g. from metrics.roc_curve), with its AUROC in the legend."""
    fig, ax = _figure()
    area = float(np.sum(0.5 * (tpr[1:] + tpr[:-1]) * np.diff(fpr)))
    ax.plot(fpr, tpr, lw=1.5, label=f"{label + ' ' if label else ''}AUROC {100 * area:.1f}%")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    return _save(fig, path)


def pro_plot(path, fpr: np.ndarray, pro: np.ndarray, fpr_limit: float = 0.3, title: str = "") -> Path:
    """PNG of a PRO curve (e.g. from metrics.pro_curve) up to 2x the FPR limit, limit shaded."""
    from .sweep import trapezoid_to
    fig, ax = _figure()
    score = trapezoid_to(np.asarray(fpr), np.asarray(pro), fpr_limit) / fpr_limit
    ax.plot(fpr, pro, lw=1.5, label=f"AUPRO@{fpr_limit:g} {100 * score:.1f}%")
    ax.axvspan(0, fpr_limit, color="tab:blue", alpha=0.08)
    ax.set(xlim=(0, min(1.0, 2 * fpr_limit)), ylim=(0, 1.01), xlabel="false positive rate (normal pixels)",
           ylabel="per-region overlap", title=title)
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p)
    return p

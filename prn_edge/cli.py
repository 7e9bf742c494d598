"""`prn-edge <verb>`: one entry point, each verb a thin function over the library."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from .config import MAX_SEED, VARIANTS, load_config_file, make_config, parse_override, _merge
from .errors import ConfigError, PrnEdgeError
from .artefact.files import check_writable
from .logs import tell


def _progress(args) -> bool:
    """Progress bars on stderr, unless --quiet or JSON lines (nothing but JSON may go there then)."""
    return not getattr(args, "quiet", False) and getattr(args, "log_format", "plain") == "plain"


def _config(args):
    data: dict = load_config_file(args.config) if getattr(args, "config", None) else {}
    for text in getattr(args, "set", None) or []:
        data = _merge(data, parse_override(text))
    return make_config(data.pop("variant", None) or args.variant, data)


# argparse types: a bad value is a one-line usage error naming the flag, before any work starts.
def _number(kind: type, low: float, high: float | None = None, above: bool = False):
    """A finite int or float >= low (> low when `above`), <= high."""
    noun = "an integer" if kind is int else "a number"
    bound = f"from {low} to {high}" if high is not None else f"{'>' if above else '>='} {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}; give {noun} {bound}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: give {noun} {bound}")
        return value
    return parse


def _ints(count: int, sep: str, example: str, high: int):
    """`count` integers from 1 to `high` separated by `sep`, e.g. HxW or MIN,OPT,MAX."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.lower().split(sep))
        except ValueError:
            values = ()
        if len(values) != count or not all(1 <= v <= high for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: give {count} integers from 1 to {high} like {example}")
        return values
    return parse


def _output(folder: bool = False):
    """A path the verb may write to (check_writable), checked before the work that fills it."""
    def parse(text: str) -> str:
        try:
            check_writable(text, folder=folder)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    return parse


COUNT, NON_NEGATIVE, SEED = _number(int, 1), _number(int, 0), _number(int, 0, MAX_SEED)
OUT_FILE, OUT_FOLDER = _output(), _output(folder=True)


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        return COUNT(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a batch size >= 1, or 'dynamic'") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors in the house style: one line `prn-edge <verb>: error: ...`, exit code 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def cmd_info(args) -> int:
    from .input_policy import AUTO_SIZE
    from .model.prn import model_info

    if args.file:
        from .describe import as_text, describe_file

        if args.variant != "prn-edge" or args.config or args.set:
            raise ConfigError("prn-edge info FILE describes the file as it was made; --variant, --config and --set "
                              "are for `prn-edge info` without a file (a variant's size and GFLOPs)")
        info = describe_file(args.file)
        print(json.dumps(info, indent=2) if args.json else as_text(info))
        return 0
    cfg = _config(args)
    info = {"variant": args.variant, **model_info(cfg.model, batch=1)}
    if cfg.model.image_size == AUTO_SIZE:
        info["image_size"] = (f"auto (chosen from the training images; {info['image_size']} for near-square ones, "
                              "measured here)")
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:>{width}}: {v:.3f}" if isinstance(v, float) else f"{k:>{width}}: {v}")
    return 0


def cmd_make_dataset(args) -> int:
    from .data.demo import make_dataset

    summary = make_dataset(Path(args.out), seed=args.seed, progress=_progress(args),
                           **({"categories": args.categories} if args.categories else {}))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_synth(args) -> int:
    from .data.dataset import load_category
    from .data.synth.preview import synth_preview

    cfg = _config(args)
    cat = load_category(Path(args.data), defects_dir=Path(args.defects) if args.defects else None,
                        num_shots=cfg.train.num_shots, seed=args.seed)
    note = cfg.model.resolve_image_size(cat.train_aspect)
    if note:
        print(note)
    synth_preview(cat, cfg.synth, Path(args.preview), n=args.n, seed=args.seed, image_size=cfg.model.hw,
                  policy=cfg.model.input_policy)
    print(f"preview written to {args.preview}")
    return 0


def cmd_train(args) -> int:
    from .train.trainer import train

    cfg = _config(args)
    res = train(cfg, Path(args.data), Path(args.out), defects_dir=Path(args.defects) if args.defects else None,
                shots_from_test=args.shots_from_test, backbone_weights=args.backbone_weights, resume=args.resume,
                progress=_progress(args), log=lambda m: tell(m, logging.INFO))  # stdout: the result alone
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    sets = [f"{name} image AUROC {100 * m['image_auroc']:.1f}, pixel AUROC {100 * m['pixel_auroc']:.1f}"
            + (" (chose it)" if res.val.get("source") == name else "")
            for name, m in res.val.items() if isinstance(m, dict) and "image_auroc" in m]
    print(f"{res.checkpoint}: step {res.best_step} of {res.steps} kept, {res.seconds:.0f} s; validation at that step: "
          + "; ".join(sets) + f" (`prn-edge info {res.checkpoint}` for the rest, `prn-edge eval` on a test set)")
    return 0


def cmd_eval(args) -> int:
    from .evaluate.checkpoint_eval import evaluate_checkpoint

    evaluate_checkpoint(Path(args.checkpoint), Path(args.data), json_out=Path(args.json) if args.json else None,
                        overlays=Path(args.overlays) if args.overlays else None,
                        save_maps=Path(args.save_maps) if args.save_maps else None, progress=_progress(args),
                        force_data=args.force_data)
    return 0


def cmd_export(args) -> int:
    from .export.onnx_export import export_onnx
    from .verify import check_parity

    target = Path(args.output)
    to_ir = args.to == "openvino"
    if to_ir and target.suffix != ".xml":
        raise PrnEdgeError(f"--to openvino writes an OpenVINO IR: give -o NAME.xml (NAME.bin goes beside it), "
                           f"not {target}")
    # With --parity the artefact reaches its path only once parity has passed: a line must never pick up an
    # unvalidated model from where a validated one is expected. An IR is converted from an ONNX that goes away.
    staging = target.with_name(f".{target.stem}.unverified{'.onnx' if to_ir else target.suffix}") \
        if args.parity or to_ir else target
    summary = export_onnx(Path(args.checkpoint), staging, batch=args.batch,
                          input_format=args.input_format, channel_order=args.channel_order, input_hw=args.input_size,
                          opset=args.opset)
    try:
        if args.parity:
            from .data.images import read_image, sample_image_files

            images = [read_image(p) for p in sample_image_files(args.parity, args.parity_images)]
            summary["parity"] = check_parity(Path(args.checkpoint), staging, images)
        ok = summary.get("parity", {}).get("ok", True)
        if ok and to_ir:
            from .export.openvino_export import export_openvino

            onnx = {k: v for k, v in summary.items() if k != "path"}  # the staged ONNX is not kept
            summary = {**export_openvino(staging, target), "onnx": onnx}
            summary.pop("source_onnx")
        elif ok and staging != target:
            os.replace(staging, target)
            summary["path"] = str(target)
    finally:
        if staging != target:
            staging.unlink(missing_ok=True)
    print(json.dumps(summary, indent=2, default=str))
    parity = summary.get("parity") or summary.get("onnx", {}).get("parity")
    if args.parity and not parity.get("ok", False):
        p = parity
        tell(f"prn-edge export: parity FAILED: max map difference {p['max_abs_map_diff']:.2e} > {p['tolerance']:.0e} "
             f"(decisions identical: {p['decisions_identical']}); nothing written to {target}")
        return 1
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate.nncf_quantize import NNCFSettings
    from .calibrate.run import CalibrationOptions, calibrate

    opts = CalibrationOptions(flavour=args.flavour, method=args.method, size=args.size, defects=args.defects,
                              seed=args.seed, max_attempts=args.max_attempts,
                              refit_prototypes=not args.no_refit_prototypes, keep_float=tuple(args.keep_float),
                              quantize_input_layer=args.quantize_input_layer,
                              sensitivity=args.sensitivity,
                              max_image_auroc_drop=args.max_image_drop / 100, max_pixel_auroc_drop=args.max_pixel_drop / 100,
                              min_decision_agreement=args.min_agreement,
                              min_expected_agreement=args.min_expected_agreement,
                              cascade_agreement=args.cascade_agreement,
                              input_format=args.input_format, channel_order=args.channel_order,
                              force_data=args.force_data,
                              nncf=NNCFSettings(fast_bias_correction=args.nncf_bias_correction == "fast",
                                                smooth_quant_alpha=args.nncf_smooth_quant))
    report = calibrate(Path(args.checkpoint), Path(args.data), args.run, root=Path(args.root), options=opts,
                       threads=args.threads)
    return 0 if report["passed"] else 1


def cmd_predict(args) -> int:
    from .runtime.predict import predict_images, table

    r = predict_images(args.artefact, args.images, Path(args.out) if args.out else None, backend=args.backend,
                       threads=args.threads or None, overlays=args.overlays, progress=not args.quiet and not args.json,
                       allow_failed_gate=args.allow_failed_gate)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(table(r))
        if args.out:
            print(f"\nwritten {r['csv']}, {Path(args.out) / 'predictions.json'}; {len(r['overlays'])} heat-map "
                  f"pictures in {Path(args.out) / 'overlays'}")
    return 0


def cmd_threshold(args) -> int:
    from .calibrate.threshold import retune_threshold

    r = retune_threshold(Path(args.artefact), Path(args.good), Path(args.output),
                         Path(args.defects) if args.defects else None, args.quantile, args.margin, args.threads,
                         force=args.force)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    g, d = r["good_scores"], r["defect_scores"]
    rows = ["| | previous | new |", "|---|---:|---:|",
            f"| image threshold | {r['previous_threshold']:.4f} | {r['threshold']:.4f} |",
            f"| false rejects of {r['good_images']} good | {r['false_rejects']['previous']} | {r['false_rejects']['new']} |"]
    if d:
        rows.append(f"| missed of {r['defect_images']} defects | {r['missed_defects']['previous']} | "
                    f"{r['missed_defects']['new']} |")
    print("\n".join(rows))
    print(f"good scores {g['min']:.4f} .. {g['max']:.4f}" + (f"; defect scores {d['min']:.4f} .. {d['max']:.4f}" if d else "")
          + f"\nrule: {r['rule']}\nwritten {r['output']}; score histogram {r['histogram']}")
    return 0


def cmd_build(args) -> int:
    from .trt import build_engine

    summary = build_engine(Path(args.onnx), Path(args.output), precision=args.precision, workspace_mb=args.workspace,
                           timing_cache=Path(args.timing_cache) if args.timing_cache else None,
                           dla_core=args.dla_core, version_compatible=args.version_compatible,
                           hardware_compat=args.hardware_compat,
                           batch_profile=args.batch_profile,
                           calibration=Path(args.calibration) if args.calibration else None,
                           implicit_int8=args.implicit_int8, allow_failed_gate=args.allow_failed_gate)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _bench_artefact(text: str, allow_failed_gate: bool):
    """[LABEL=]PATH[@BACKEND][?KEY=VALUE&...]: PATH@openvino runs an .onnx with OpenVINO beside ONNX Runtime on the
    same file; the query gives the backend's options (YAML values), e.g. 'm.onnx?providers=tensorrt&trt_fp16=true'."""
    import yaml

    from .bench.throughput import Artefact
    from .runtime import backend_names

    head, _, query = text.partition("?")
    label, sep, path = head.partition("=")
    if not sep:
        label, path = "", head
    path, at, backend = path.rpartition("@")
    if not at or backend not in backend_names():
        path, backend = f"{path}{at}{backend}", "auto"
    options: dict = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key or key in options:
            raise PrnEdgeError(f"{text}: options after '?' are KEY=VALUE pairs joined by '&', each key once; got {item!r}")
        options[key] = yaml.safe_load(value) if value else ""
    if not label:
        label = Path(path).name + (f"@{backend}" if backend != "auto" else "") + (f"?{query}" if query else "")
    return Artefact(Path(path), label, backend=backend, allow_failed_gate=allow_failed_gate, options=options)


def cmd_bench(args) -> int:
    from .bench.machine import machine_info
    from .bench.throughput import images_used, latency_plot, markdown, run_bench
    from .data.images import read_image, sample_image_files
    from .artefact import write_json

    if args.images:
        images = [read_image(p) for p in sample_image_files(args.images, args.max_images)]  # DataError if none
    else:
        from .data.synth.textures import builtin_textures

        images = builtin_textures(256)[:32]  # real photos shipped offline, not zeros
    arts = [_bench_artefact(a, args.allow_failed_gate) for a in args.artefacts]
    report = run_bench(arts, images, batches=args.batch, warmup=args.warmup, iters=args.iters, threads=args.threads,
                       rounds=args.rounds,
                       progress=_progress(args))
    report["machine"] = machine_info()
    report["machine"]["matmul_peak_gflops"] = report["gemm_peak"]["gflops"]
    report["images"] = images_used(images, args.images)
    table = markdown(report)
    print(table)
    if args.json:
        out = Path(args.json)
        write_json(out, report)
        out.with_suffix(".md").write_text(table)
        png = latency_plot(report, out.with_suffix(".png"))
        print(f"written {out}, {out.with_suffix('.md')}" + (f", {png}" if png else
                                                             " (no latency plot: matplotlib is not installed)"))
    return 0


def cmd_run(args) -> int:
    from .line.cli import run_line

    if args.check:
        from dataclasses import asdict

        from .line.check import check_line

        found = {str(c): check_line(c) for c in args.config}
        if args.json:
            print(json.dumps({c: [asdict(x) for x in checks] for c, checks in found.items()}, indent=2))
        else:
            for c, checks in found.items():
                print(f"{c}:")
                for x in checks:
                    print("  " + x.row())
        bad = sum(not x.ok for checks in found.values() for x in checks)
        if bad:
            tell(f"prn-edge run: error: {bad} problem(s) found by --check (listed above)")
        return 2 if bad else 0

    if len(args.config) > 1:  # several cameras; lines with the same engine file batch their calls together
        from .line.cli import run_lines

        summaries = run_lines([Path(c) for c in args.config], duration_s=args.duration, max_parts=args.max_parts,
                              summary_json=args.summary_json, pid_file=args.pid_file)
        print(json.dumps(summaries, indent=2, default=str))
        return _run_exit_code(summaries)
    summary = run_line(Path(args.config[0]), duration_s=args.duration, max_parts=args.max_parts,
                       summary_json=args.summary_json, pid_file=args.pid_file)
    print(json.dumps(summary, indent=2, default=str))
    return _run_exit_code([summary])


def _run_exit_code(summaries: list[dict]) -> int:
    """1: some part undecided; 3: every part decided, but some command was lost (failed, stale, late, unknown:
    `commands_lost` in the summary says which output); 0: neither."""
    if any(s.get("undecided", 0) for s in summaries):
        return 1
    if any(s.get("commands_lost") for s in summaries):
        tell("prn-edge run: some reject commands did not reach their output in time: see commands_lost")
        return 3
    return 0


def cmd_reload(args) -> int:
    from .line.service import reload_line

    pid = reload_line(args.pid_file)
    print(f"SIGHUP sent to prn-edge pid {pid}: it reads its config again and swaps in the engine artefact it names; "
          "the result is in its log (a failed swap keeps the running engine) and in prn_line_engine_swaps_total")
    return 0


def cmd_cameras(args) -> int:
    from .line.cli import list_cameras

    devices = list_cameras(args.cti or "", features=not args.no_features)
    if args.json:
        print(json.dumps(devices, indent=2, default=str))
    else:
        for i, d in enumerate(devices):
            feats = d.pop("features", None) or {}
            print(f"[{i}] " + ", ".join(f"{k}={v}" for k, v in d.items()))
            for name, f in feats.items():
                if name == "error" or f is None:
                    print(f"      {name}: {f if name == 'error' else '-'}")
                    continue
                extra = f" (allowed: {', '.join(map(str, f['allowed']))})" if "allowed" in f else (
                    f" (range {f['range'][0]}..{f['range'][1]})" if "range" in f else "")
                print(f"      {name}: {f['value']}{extra}")
        if not devices:
            print("no cameras found")
    return 0


def cmd_service(args) -> int:
    import shutil

    from .line.config import load_line_config
    from .line.service import hidden_paths, render_unit, written_folders

    cfg = load_line_config(args.config)  # a service that cannot start is not installed
    beside = Path(sys.executable).parent / "prn-edge"  # the venv's entry point, whatever PATH says
    exe = str(beside) if beside.is_file() else shutil.which("prn-edge") or f"{sys.executable} -m prn_edge.cli"
    text = render_unit(args.config, exe, user=args.user, watchdog_s=args.watchdog_s, name=args.name,
                       writable=tuple(written_folders(cfg)))
    hidden = hidden_paths([args.config, cfg.engine.path, *written_folders(cfg)])
    if hidden:
        tell(f"prn-edge service: warning: {', '.join(hidden)} lie under /tmp or /home, which the unit hides from the "
             "service (PrivateTmp, ProtectHome): move them, e.g. config to /etc/prn-edge, engines to /opt, "
             "outputs to /var/lib/prn-edge", logging.WARNING)
    if args.print:
        print(text, end="")
        return 0
    target = Path(args.unit_dir) / f"{args.name}.service"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as e:
        raise PrnEdgeError(f"cannot write {target}: {e}; run as root or pass --unit-dir / --print") from None
    print(f"wrote {target}\n  useradd --system --groups video {args.user}   # once\n"
          f"  systemctl daemon-reload && systemctl enable --now {args.name}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.workdir), category=args.category, steps=args.steps, seed=args.seed, parts=args.parts)
    return 0


def cmd_triton_repo(args) -> int:
    from .serve.triton_repo import ParityCheck, write_model

    options = {"max_batch": args.max_batch, "preferred_batch": args.preferred_batch,
               "max_queue_delay_us": args.max_queue_delay_us, "instances": args.instances,
               "instance_kind": args.instance_kind, "ort_threads": args.ort_threads}
    tolerance = {"tolerance": args.parity_tolerance} if args.parity_tolerance is not None else {}
    parity = ParityCheck(Path(args.parity), args.parity_images, **tolerance) if args.parity else None
    summary = write_model(args.artefacts, Path(args.out), name=args.name, add=args.add,
                          python_backend=args.python_backend, options=options,
                          allow_failed_gate=args.allow_failed_gate, parity=parity, force=args.force)
    print(json.dumps(summary, indent=2))
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="prn-edge", choices=sorted(VARIANTS), help="named preset (default prn-edge)")
    p.add_argument("--config", help="YAML file with model/synth/train sections (overrides the variant)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.steps=500")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .logs import FORMATS, LEVELS

    ap = _Parser(prog="prn-edge", description="PRN anomaly detection: train, evaluate, convert, run.")
    ap.add_argument("--version", action="version", version=f"prn-edge {__version__}")
    ap.add_argument("--log-level", default="info", choices=LEVELS, help="log level (default info)")
    ap.add_argument("--log-format", default="plain", choices=FORMATS, help="plain text or JSON lines (journald)")
    sub = ap.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("info", help="what a checkpoint, artefact or engine records about itself; without a file, "
                                    "parameters and GFLOPs of a variant")
    p.add_argument("file", nargs="?", help="a checkpoint (.pt), an artefact (.onnx, .xml) or an engine (.engine)")
    _add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("make-dataset", help="build the demo dataset (MVTec layout) from real offline photos")
    p.add_argument("--out", required=True, type=OUT_FOLDER)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--categories", nargs="+")
    p.set_defaults(func=cmd_make_dataset)

    p = sub.add_parser("synth", help="preview generated training anomalies")
    _add_config_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--defects")
    p.add_argument("--preview", required=True, type=OUT_FILE, help="PNG to write")
    p.add_argument("-n", type=_number(int, 1, 256), default=16)
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train PRN on one category")
    _add_config_args(p)
    p.add_argument("--data", required=True, help="category folder (MVTec or generic layout)")
    p.add_argument("--out", required=True, type=OUT_FILE, help="checkpoint to write (.pt)")
    p.add_argument("--defects", help="folder of real defect shots (<name>.png + <name>_mask.png)")
    p.add_argument("--shots-from-test", type=NON_NEGATIVE, default=0, help="MVTec AD: take K defects per type out of test/")
    p.add_argument("--backbone-weights", help="local state-dict file for resnet18 / wide_resnet50_2")
    p.add_argument("--resume", action="store_true", help="continue from OUT's .last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a category's test set")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--json", type=OUT_FILE, help="metrics JSON to write (a .md table is written beside it)")
    p.add_argument("--overlays", type=OUT_FOLDER, help="folder for heat-map overlay PNGs")
    p.add_argument("--save-maps", type=OUT_FOLDER, help="folder for float32 TIFF maps in the MVTec AD evaluation layout")
    p.add_argument("--force-data", action="store_true",
                   help="evaluate although the data's training normals differ from the checkpoint's (loud warning)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="checkpoint -> ONNX (opset 17), or an OpenVINO IR, with prn_edge metadata")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, type=OUT_FILE, help="model.onnx (--to openvino: model.xml)")
    p.add_argument("--to", default="onnx", choices=["onnx", "openvino"],
                   help="openvino: an FP32 OpenVINO IR (NAME.xml + NAME.bin) converted from the ONNX export")
    p.add_argument("--batch", default="1", type=_batch, help="static batch size, or 'dynamic'")
    p.add_argument("--input-format", default="float", choices=["float", "uint8"],
                   help="uint8: camera frames NHWC, converted inside the graph")
    p.add_argument("--channel-order", default="rgb", choices=["rgb", "bgr", "mono"])
    p.add_argument("--input-size", type=_ints(2, "x", "480x640", 16384),
                   help="camera frame size HxW for uint8 input (resized inside the graph)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--parity", metavar="DIR", help="check ONNX Runtime against PyTorch on the images in DIR "
                   "(--to openvino: on the ONNX the IR is converted from)")
    p.add_argument("--parity-images", type=COUNT, default=8, help="images used by --parity (spread over DIR)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate", help="INT8 calibration run with an accuracy gate")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="the category folder the checkpoint was trained on")
    p.add_argument("--run", required=True, help="name of the run folder under --root")
    p.add_argument("--root", default="calibration", type=OUT_FOLDER)
    p.add_argument("--flavour", default="cpu", choices=["cpu", "tensorrt", "openvino"],
                   help="cpu: ONNX Runtime Q/DQ; tensorrt: Q/DQ for TensorRT; openvino: NNCF, an OpenVINO IR")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--size", type=COUNT, default=32, help="calibration images (training normals, stratified)")
    p.add_argument("--defects", type=NON_NEGATIVE, default=0, help="real defect shots added to the calibration set")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--max-attempts", type=COUNT, default=4)
    p.add_argument("--keep-float", nargs="*", default=[], metavar="PREFIX",
                   help="node-name prefixes kept in float in every attempt, e.g. /decoder/ /msa")
    p.add_argument("--quantize-input-layer", action="store_true",
                   help="quantize the input layer too: the first convolution and the nodes before it "
                        "(normalization; a uint8 graph's cast, resampling and padding). Default: they stay "
                        "float, 8 bits would re-grid the camera's grey levels")
    p.add_argument("--sensitivity", default="groups", choices=["groups", "sqnr"],
                   help="fallback ranking: each layer group's effect on the map (default), or per-node SQNR")
    p.add_argument("--no-refit-prototypes", action="store_true",
                   help="keep the FP32 prototypes (default: re-fit them on the INT8 encoder's features)")
    p.add_argument("--max-image-drop", type=_number(float, 0, 100), default=0.5, help="allowed image AUROC drop, points")
    p.add_argument("--max-pixel-drop", type=_number(float, 0, 100), default=1.0, help="allowed pixel AUROC drop, points")
    p.add_argument("--min-agreement", type=_number(float, 0, 1), default=0.95,
                   help="decisions INT8 must share with FP32 on the gate's validation set (fraction)")
    p.add_argument("--min-expected-agreement", type=_number(float, 0, 1), default=0.95,
                   help="agreement INT8's score noise lets one expect at FP32's operating point (fraction; "
                        "0 turns the check off)")
    p.add_argument("--cascade-agreement", type=_number(float, 0.5, 0.999999), default=0.99,
                   help="agreement with FP32 a cascade of the run's models is to expect (engine backend 'cascade': "
                        "FP32 decides the parts near the threshold); sets the margin the INT8 artefact records")
    p.add_argument("--input-format", default="float", choices=["float", "uint8"])
    p.add_argument("--channel-order", default="rgb", choices=["rgb", "bgr", "mono"])
    p.add_argument("--threads", type=NON_NEGATIVE, default=0)
    p.add_argument("--force-data", action="store_true",
                   help="calibrate although the data's training normals differ from the checkpoint's (loud warning)")
    p.add_argument("--nncf-bias-correction", default="fast", choices=["fast", "full"],
                   help="--flavour openvino: NNCF's bias correction (full: slower)")
    p.add_argument("--nncf-smooth-quant", type=_number(float, 0, 1, above=True), default=None, metavar="ALPHA",
                   help="--flavour openvino: SmoothQuant on MatMul with this alpha (NNCF's transformer mode)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("predict", help="verdicts, scores and heat maps for image files (any size), as the line decides")
    p.add_argument("artefact", help="model.onnx, a checkpoint .pt, an .engine, an OpenVINO .xml or triton://HOST/MODEL")
    p.add_argument("images", nargs="+", help="image files and folders (searched below; masks folders skipped)")
    p.add_argument("-o", "--out", type=OUT_FOLDER,
                   help="write predictions.csv, predictions.json and overlays/ (heat maps) here")
    p.add_argument("--overlays", type=NON_NEGATIVE, default=16,
                   help="heat-map pictures written with --out: the rejects first, then the highest passes")
    p.add_argument("--backend", default="auto", help="auto (by suffix), onnxruntime, torch, openvino, tensorrt, triton")
    p.add_argument("--threads", type=NON_NEGATIVE, default=0)
    p.add_argument("--allow-failed-gate", action="store_true",
                   help="run an INT8 artefact whose calibration failed its accuracy gate")
    p.add_argument("--json", action="store_true", help="print the report as JSON (no table, no bar)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("threshold", help="re-tune an artefact's image threshold on the line's own good parts")
    p.add_argument("artefact", help="exported model.onnx (FP32 or INT8)")
    p.add_argument("--good", required=True, help="folder of good parts captured on the line")
    p.add_argument("--defects", help="folder of defective parts from the line (optional)")
    p.add_argument("-o", "--output", required=True, type=OUT_FILE, help="the re-tuned copy (the original stays as trained)")
    p.add_argument("--quantile", type=_number(float, 0.5, 1), default=1.0, help="of the good scores (1.0 = the highest)")
    p.add_argument("--margin", type=_number(float, 0), default=0.1, help="x the artefact's score spread, above that quantile")
    p.add_argument("--threads", type=NON_NEGATIVE, default=0)
    p.add_argument("--force", action="store_true", help="accept a threshold that lets more of the given defects through")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_threshold)

    p = sub.add_parser("build", help="ONNX -> TensorRT engine with a manifest (needs TensorRT and a GPU)")
    p.add_argument("onnx")
    p.add_argument("-o", "--output", required=True, type=OUT_FILE, help="engines/NAME.engine")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8", "best"])
    p.add_argument("--workspace", type=COUNT, default=1024, help="MiB (Jetson: keep it small, e.g. 256)")
    p.add_argument("--timing-cache")
    p.add_argument("--dla-core", type=NON_NEGATIVE)
    p.add_argument("--version-compatible", action="store_true", help="engine loads on later TensorRT of the same major")
    p.add_argument("--hardware-compat", choices=["ampere_plus", "same_compute_capability"],
                   help="hardware compatibility level (TensorRT >= 8.6; slower engines)")
    p.add_argument("--batch-profile", metavar="MIN,OPT,MAX", type=_ints(3, ",", "1,4,8", 4096), help="optimization profile for a dynamic-batch ONNX")
    p.add_argument("--calibration", help="calibration run folder (implicit INT8 on TensorRT <= 10)")
    p.add_argument("--implicit-int8", action="store_true")
    p.add_argument("--allow-failed-gate", action="store_true",
                   help="build an INT8 ONNX whose calibration run failed its accuracy gate")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("bench", help="throughput of artefacts side by side (first = agreement reference)")
    p.add_argument("artefacts", nargs="+",
                   help="[LABEL=]PATH[@BACKEND][?OPTION=VALUE&...] (.pt, .onnx, .engine, .xml); e.g. "
                        "ov=model.onnx@openvino, 'trt16=model.onnx?providers=tensorrt&trt_fp16=true'")
    p.add_argument("--batch", type=_number(int, 1, 1024), nargs="+", default=[1])
    p.add_argument("--iters", type=COUNT, default=50)
    p.add_argument("--rounds", type=COUNT, default=5,
                   help="artefacts take turns in this many rounds (fair on a machine whose speed drifts)")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=10)
    p.add_argument("--threads", type=NON_NEGATIVE)
    p.add_argument("--images", help="folder of real images (default: the built-in textures, photos bundled with scikit-image)")
    p.add_argument("--max-images", type=COUNT, default=64,
                   help="images taken from --images, spread over the sorted folder (every type, the good parts); "
                        "iterations cycle through them (a cascade's cost depends on the mix: give --iters >= this)")
    p.add_argument("--json", type=OUT_FILE, help="write JSON, plus .md table and .png latency plot beside it")
    p.add_argument("--allow-failed-gate", action="store_true",
                   help="measure INT8 artefacts whose calibration failed its accuracy gate too")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("run", help="run a production line from a YAML config")
    p.add_argument("--config", required=True, action="append",
                   help="line.yaml (validated before the first frame); repeat it for several cameras")
    p.add_argument("--duration", type=_number(float, 0, above=True), help="stop after this many seconds")
    p.add_argument("--max-parts", type=COUNT)
    p.add_argument("--summary-json", type=OUT_FILE)
    p.add_argument("--check", action="store_true",
                   help="check config, engine, source, outputs and folders without running; every problem at once")
    p.add_argument("--json", action="store_true", help="with --check: the findings as JSON")
    p.add_argument("--pid-file", type=OUT_FILE, help="write the process id here while the line runs (prn-edge reload)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reload", help="swap in the engine artefact a running line's config now names (SIGHUP)")
    p.add_argument("--pid-file", required=True, help="the --pid-file the line was started with")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("cameras", help="list GenICam cameras and their main features")
    p.add_argument("--cti", help="GenTL producer (.cti); default: GENICAM_GENTL64_PATH")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-features", action="store_true", help="list only, without opening each camera")
    p.set_defaults(func=cmd_cameras)

    p = sub.add_parser("service", help="install a line as a systemd service (Type=notify, watchdog, restart)")
    ssub = p.add_subparsers(dest="action", required=True)
    q = ssub.add_parser("install", help="write the unit file for a line config")
    q.add_argument("--config", required=True, help="the line YAML the service runs")
    q.add_argument("--name", default="prn-edge", help="unit name (prn-edge.service)")
    q.add_argument("--user", default="prn-edge", help="the dedicated user the line runs as")
    q.add_argument("--unit-dir", default="/etc/systemd/system", type=OUT_FOLDER)
    q.add_argument("--watchdog-s", type=COUNT, default=10, help="WatchdogSec: restart a line that stops deciding")
    q.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("demo", help="the whole chain on embedded defaults")
    p.add_argument("--workdir", default="runs/demo", type=OUT_FOLDER)
    p.add_argument("--category", default="coin", help="demo category: coin (an object part), brick, grass, gravel")
    p.add_argument("--steps", type=COUNT, default=300, help="training steps (the demo trains briefly; prn-edge train uses the variant default)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--parts", type=COUNT, default=60, help="parts on the simulated conveyor")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("triton-repo", help="a Triton model repository from artefacts (.onnx; .engine + manifest)")
    p.add_argument("artefacts", nargs="+", help="exported .onnx or built .engine files: consecutive versions of one model")
    p.add_argument("--out", required=True, type=OUT_FOLDER, help="the model repository folder (model_repository/)")
    p.add_argument("--name", help="model name (default: the artefact's category)")
    p.add_argument("--add", action="store_true", help="write them as the next versions of an existing model")
    p.add_argument("--python-backend", action="store_true",
                   help="a Python-backend model running the ONNX with ONNX Runtime (Triton without onnxruntime backend)")
    p.add_argument("--max-batch", type=COUNT, help="max_batch_size (default 8; an engine's: its profile's maximum)")
    p.add_argument("--preferred-batch", type=COUNT, nargs="+", help="dynamic batcher's preferred batch sizes")
    p.add_argument("--max-queue-delay-us", type=NON_NEGATIVE, help="dynamic batcher's queue delay (default 100)")
    p.add_argument("--instances", type=COUNT, help="model instances (default 1)")
    p.add_argument("--instance-kind", choices=["auto", "gpu", "cpu"],
                   help="auto: GPU for onnxruntime/tensorrt, CPU for the python backend")
    p.add_argument("--ort-threads", type=NON_NEGATIVE,
                   help="python backend: ONNX Runtime threads per instance (0: its default)")
    p.add_argument("--allow-failed-gate", action="store_true",
                   help="serve an INT8 artefact whose calibration failed its accuracy gate")
    p.add_argument("--parity", metavar="DIR",
                   help="refuse a new version whose maps or scores differ from the previous version's on the images "
                        "in DIR (both through ONNX Runtime)")
    p.add_argument("--parity-images", type=COUNT, default=16, help="images used by --parity (spread over DIR)")
    p.add_argument("--parity-tolerance", type=_number(float, 0),
                   help="largest map or score difference --parity accepts (default: export parity's, 1e-4)")
    p.add_argument("--force", action="store_true", help="write a version that fails --parity (recorded as forced)")
    p.set_defaults(func=cmd_triton_repo)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .logs import configure_logging

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the verb's parser (argparse leaves them to the top-level one)
            parser.exit(2, f"{parser.prog} {args.verb}: error: unrecognized arguments: {' '.join(map(repr, extra))}\n")
    except SystemExit as e:  # usage errors (2) and --help (0) return like any other outcome
        return e.code
    configure_logging(args.log_level, args.log_format)
    try:
        return args.func(args)
    except PrnEdgeError as e:
        tell(f"prn-edge {args.verb}: error: {e}")
        return 2
    except KeyboardInterrupt:
        tell("interrupted", logging.WARNING)
        return 130
    except BrokenPipeError:  # `prn-edge info X | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception:
        if args.log_format != "json":
            raise
        # a traceback is many plain lines: under JSON it is one record (its `exception` field)
        logging.getLogger("prn_edge.cli").critical("prn-edge %s: unexpected error (a prn_edge bug: report it with "
                                                   "this record)", args.verb, exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

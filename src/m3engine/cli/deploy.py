"""`m3engine build` (an ONNX artifact) and `m3engine validate` (any backend against fp32)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from m3engine.settings import add_arguments


def _texts(path: str | None, field: str) -> list[str] | None:
    if path is None:
        return None
    from m3engine.cli.files import read_texts

    return read_texts(Path(path), field)


def cmd_build(args: argparse.Namespace) -> int:
    from m3engine.accuracy.gate import Gate
    from m3engine.deploy.build import BuildOptions, build
    from m3engine.deploy.texts import ValidationTexts

    texts = _texts(args.texts, args.field)
    options = BuildOptions(
        model=args.model,
        out=Path(args.out),
        dtype=args.dtype,
        format=args.format,
        calibration=_texts(args.calibration, args.field),
        validation=ValidationTexts.from_texts(texts) if texts else None,
        gate=Gate.from_args(args),
        validate=args.validate,
        plain_graph=args.plain_graph,
        probe_margin=args.probe_margin,
    )
    manifest = build(options)
    summary: dict[str, Any] = {"out": str(options.out), "dtype": manifest.dtype, "build": manifest.build}
    validation = manifest.validation or {}
    if "metrics" in validation:
        from m3engine.deploy.validate import table

        print(table(validation), file=sys.stderr)
    summary["validation_pass"] = validation.get("pass")
    print(json.dumps(summary, indent=2, default=str))
    return 1 if validation.get("pass") is False else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from m3engine.accuracy.gate import Gate
    from m3engine.deploy.texts import ValidationTexts
    from m3engine.deploy.validate import compare, table
    from m3engine.engine import Engine
    from m3engine.settings import EngineSettings, from_sources

    settings: EngineSettings = from_sources(EngineSettings, vars(args))
    ours = Engine.from_settings(settings)
    reference_model = args.reference_model or _artifact_source(ours) or settings.model
    ref = Engine.load(reference_model, backend="reference", device="cpu", dtype="fp32", kind=settings.kind)
    texts = _texts(args.texts, args.field)
    chosen = ValidationTexts.from_texts(texts) if texts else ValidationTexts.built_in(passages=args.passages)
    report = compare(ours, ref, chosen, Gate.from_args(args))
    print(table(report), file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0 if report["pass"] else 1


def _artifact_source(engine: Any) -> str | None:
    """An ONNX artifact's source checkpoint, from its manifest: the natural fp32 reference."""
    manifest = getattr(engine.backend, "manifest", None)
    return str(manifest.source["path"]) if manifest is not None else None


def add_deploy_parsers(sub: Any) -> None:
    from m3engine.accuracy.gate import Gate

    build = sub.add_parser(
        "build",
        help="Build an ONNX artifact (graph with heads, fusions, int8/fp16, manifest, TensorRT options).",
        description="TensorRT options and the trtexec line are written but were not run here "
        "(no TensorRT on this project's machines). fp16 artifacts are for CUDA and are only load-checked.",
    )
    build.add_argument("model", help="Hub id or local checkpoint directory.")
    build.add_argument(
        "--format",
        choices=["onnx", "triton"],
        default="onnx",
        help="onnx: an artifact directory; triton: a Triton model repository around it (not run here).",
    )
    build.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default="fp32", help="Precision.")
    build.add_argument("--out", required=True, help="Directory to create (must not exist or be empty).")
    build.add_argument("--calibration", help="int8: texts (.txt/.jsonl/.parquet) the recipe is chosen on.")
    build.add_argument("--texts", help="Validation texts; default: a built-in multilingual sample.")
    build.add_argument("--field", default="text", help="Field / column of the text in .jsonl and .parquet.")
    build.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True)
    build.add_argument(
        "--plain-graph",
        action="store_true",
        help="Keep plain.onnx for trtexec / Triton (int8 always keeps it).",
    )
    build.add_argument(
        "--probe-margin",
        type=float,
        default=0.02,
        help="int8: how far the probe's top-10 agreements must clear the gate's for a recipe to be "
        "chosen (default 0.02: their spread between draws of the same check).",
    )
    Gate.add_flags(build)
    build.set_defaults(func=cmd_build)

    validate = sub.add_parser("validate", help="Compare a backend / dtype with the fp32 reference.")
    validate.add_argument(
        "--reference-model", help="fp32 reference checkpoint (default: the artifact's source, or --model)."
    )
    validate.add_argument("--texts", help="Texts (.txt/.jsonl/.parquet); default: a built-in sample.")
    validate.add_argument("--field", default="text", help="Field / column of the text.")
    validate.add_argument("--passages", type=int, default=128, help="Built-in sample: passages to use.")
    validate.add_argument("--json", help="Write the JSON report here instead of stdout.")
    Gate.add_flags(validate)
    add_arguments(validate)
    validate.set_defaults(func=cmd_validate)

"""`m3engine build --format onnx`: export, optimize, (quantize | fp16), copy the model files, validate.

Steps, each on disk so that a 2.2 GB model never needs two copies in memory at once:
export (torch, eager attention) into a scratch directory -> ONNX Runtime's transformer fusions ->
fp16 conversion or int8 quantization (recipe chosen against the gate, quantize.py; for TensorRT,
the plain graph's activation ranges, trt_calibration.py) -> the artifact directory (graph +
config/tokenizer/side files) -> TensorRT options and trtexec line -> manifest
with every file's hash -> validation against the fp32 reference through the Engine, written into
the manifest.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from m3engine.accuracy.gate import Gate
from m3engine.backends.onnx_artifact import GRAPH, Manifest, ModelFacts, hash_files, write_manifest
from m3engine.deploy.smooth import PROTOBUF_LIMIT, load_graph, save_graph
from m3engine.deploy.tensorrt import PLAIN_GRAPH
from m3engine.deploy.texts import ValidationTexts
from m3engine.errors import InputError
from m3engine.models.discovery import resolve_model_path
from m3engine.models.kinds import COLBERT_FILE, SPARSE_FILE, read_json
from m3engine.models.spec import ModelSpec, inspect_model
from m3engine.tokenization.tokenizer import TextTokenizer

DTYPES = ("fp32", "fp16", "int8")
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".data"}
TRT_CALIBRATION = "tensorrt_calibration"  # _graph's note that write_tensorrt_files records


@dataclass
class BuildOptions:
    model: str
    out: Path
    dtype: str = "fp32"
    format: str = "onnx"  # or "triton": a Triton model repository around the artifact (triton.py)
    calibration: list[str] | None = None  # int8: texts the recipe is chosen on
    validation: ValidationTexts | None = None
    gate: Gate = field(default_factory=Gate)
    # int8: the probe's top-10 agreements must clear the gate by this much (the spread of one
    # recipe's agreement between draws of the same check, so that the choice holds on other texts)
    probe_margin: float = 0.02
    validate: bool = True
    tensorrt: bool = True  # write tensorrt.json: provider options and trtexec line (deploy/tensorrt.py)
    # keep the exporter's standard-op graph as plain.onnx (trtexec, Triton); int8 with tensorrt always does
    plain_graph: bool = False


def source_weights(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def fp32_bytes(weights: list[Path]) -> int:
    """The weights' size in fp32, as the export writes them: a checkpoint stored in fp16 or bf16
    (1.1 GB for BGE-M3) still exports to 2.27 GB, over protobuf's 2 GB. Safetensors files say their
    element counts in their header; other formats count twice their size (fp16 at most)."""
    total = 0
    for path in weights:
        if path.suffix != ".safetensors":
            total += 2 * path.stat().st_size
            continue
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                total += 4 * math.prod(entry["shape"])
    return total


def copy_model_files(src: Path, dst: Path) -> list[str]:
    """Everything the loader reads but the weights: config, tokenizer, pooling, BGE-M3's side heads."""
    copied = []
    for item in sorted(src.rglob("*")):
        rel = item.relative_to(src)
        keep = rel.name in (COLBERT_FILE, SPARSE_FILE) or item.suffix not in WEIGHT_SUFFIXES
        if not item.is_file() or not keep or rel.parts[0].startswith(".") or rel.name == "README.md":
            continue
        if rel.parts[0] == "onnx":  # a hub repo's own ONNX export is not ours
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item, dst / rel)
        copied.append(rel.as_posix())
    return copied


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("m3engine", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _graph(
    spec: ModelSpec, options: BuildOptions, scratch: Path, large: bool
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Write the artifact's model.onnx; (inputs, outputs, build notes)."""
    from m3engine.deploy.export import export
    from m3engine.deploy.optimize import optimize, save, to_fp16

    exported = scratch / "export" / "model.onnx"
    exported.parent.mkdir()
    inputs, outputs = export(spec, exported)
    # int8's TensorRT files are measured on and name the tensors of the plain graph: it stays
    int8_tensorrt = options.dtype == "int8" and options.tensorrt
    if options.plain_graph or int8_tensorrt:
        _copy_graph(exported, options.out / PLAIN_GRAPH)
    model, notes = optimize(exported, spec)
    target = options.out / GRAPH
    if options.dtype == "int8":
        from m3engine.deploy.quantize import choose_int8

        fp32 = scratch / "fp32" / GRAPH
        fp32.parent.mkdir()
        save(model, fp32, large)
        del model
        layers = int(read_json(spec.path / "config.json")["num_hidden_layers"])
        probe = ValidationTexts.calibration(options.calibration)
        gate = replace(
            options.gate,
            retrieval_top10=options.gate.retrieval_top10 + options.probe_margin,
            top10_agreement=options.gate.top10_agreement + options.probe_margin,
        )
        notes |= choose_int8(fp32, target, spec, layers, probe, gate, large)
        notes["probe_margin"] = options.probe_margin
        notes["calibration_texts"] = len(probe.passages)
        notes["calibration_queries"] = len(probe.queries)
        if int8_tensorrt:
            from m3engine.deploy.trt_calibration import write_calibration

            notes[TRT_CALIBRATION] = write_calibration(exported, options.out, spec, probe, large, scratch)
    else:
        if options.dtype == "fp16":
            notes |= to_fp16(model)
        save(model, target, large)
    return inputs, outputs, notes


def _copy_graph(src: Path, dst: Path) -> None:
    """Re-save a graph (whose weights may be spread over many files) as one graph + one data file."""
    save_graph(load_graph(src), dst)


README = """# ONNX artifact built by `m3engine build`

Load it with `m3engine serve --backend onnx --model THIS_DIR` (or `Engine.load(THIS_DIR, backend="onnx")`).
`manifest.json` records the source model and its hash, the precision ({dtype}), the graph's inputs and
outputs, the tools that built it, and the validation against the fp32 reference; a load refuses the
directory when any file differs from the hashes recorded there.

TensorRT: `tensorrt.json` holds ONNX Runtime's TensorRT provider options and an equivalent `trtexec`
line; int8 artifacts add `plain.onnx`'s activation ranges, `trt_cache/calibration.flatbuffers` for
ONNX Runtime and `calibration.trt.cache` for trtexec (its header names the TensorRT version it
claims; TensorRT recalibrates if that is not its own). They were NOT RUN: TensorRT could not be
installed where this was built; test them first.
"""


def build(options: BuildOptions) -> Manifest:
    """Build the artifact into options.out (which must not exist or be empty); its manifest."""
    if options.dtype not in DTYPES:
        raise InputError(f"--dtype {options.dtype!r} cannot be built; choose one of: {', '.join(DTYPES)}")
    if options.format not in ("onnx", "triton"):
        raise InputError(f"--format {options.format!r} is not one of: onnx, triton")
    out = options.out
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out} exists and is not empty; remove it or choose another directory")
    if options.format == "onnx":
        return _build_onnx(options)
    from m3engine.deploy.triton import VERSION, model_name, write_repository

    name = model_name(options.model)
    manifest = _build_onnx(replace(options, out=out / name / VERSION))
    write_repository(out, name, manifest)
    return manifest


def _build_onnx(options: BuildOptions) -> Manifest:
    out = options.out
    source = resolve_model_path(options.model)
    spec = inspect_model(source, name=options.model)
    weights = source_weights(source)
    large = fp32_bytes(weights) >= PROTOBUF_LIMIT
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="m3engine-build-") as scratch:
        inputs, outputs, notes = _graph(spec, options, Path(scratch), large)
    copy_model_files(source, out)
    TextTokenizer.load(source).freeze(out)  # the tokenizer without transformers (tokenization/source.py)
    (out / "README.md").write_text(README.format(dtype=options.dtype), encoding="utf-8")
    from m3engine.deploy.export import OPSET, colbert_dim

    manifest = Manifest(
        model=ModelFacts.of(spec, colbert_dim(spec)),
        dtype=options.dtype,
        inputs=inputs,
        outputs=outputs,
        opset=OPSET,
        providers=["CUDAExecutionProvider"] if options.dtype == "fp16" else ["CPUExecutionProvider"],
        source={"model": options.model, "path": str(source), "weights_sha256": hash_files(source, weights)},
        tools=tool_versions(),
        build=notes,
    )
    if options.tensorrt:
        from m3engine.deploy.tensorrt import write_tensorrt_files

        calibration = manifest.build.pop(TRT_CALIBRATION, None)
        manifest.build["tensorrt"] = write_tensorrt_files(out, manifest, spec, calibration)
    write_manifest(out, manifest)
    loads = options.dtype != "fp16" or cpu_load_check(out / GRAPH)
    if options.validate and loads is not True:
        manifest.validation = {"run": False, "why": f"fp16 graph does not load on the CPU: {loads}"}
        write_manifest(out, manifest, manifest.files)
    elif options.validate:  # fp16 runs on ONNX Runtime's CPU provider too: slowly, but the numbers hold
        manifest.validation = validate_artifact(out, source, options)
        write_manifest(out, manifest, manifest.files)
    return manifest


def validate_artifact(out: Path, source: Path, options: BuildOptions) -> dict[str, Any]:
    from m3engine.deploy.validate import compare
    from m3engine.engine import Engine

    ours = Engine.load(str(out), backend="onnx", device="cpu")
    ref = Engine.load(str(source), backend="reference", device="cpu", dtype="fp32")
    return compare(ours, ref, options.validation or ValidationTexts.built_in(), options.gate)


def cpu_load_check(graph: Path) -> bool | str:
    """True when ONNX Runtime's CPU provider accepts the graph, else why not."""
    from m3engine.backends.onnx_session import open_session

    try:
        open_session(graph, "cpu", threads=1)
    except Exception as error:  # onnxruntime raises its own exception types
        return f"{type(error).__name__}: {str(error)[:200]}"
    return True

"""An ONNX artifact directory and its manifest: what was built, from what, and a check at load.

`m3engine build --format onnx` writes a directory that a checkpoint loader can read as it is
(config.json, tokenizer files, the sentence-transformers and BGE-M3 side files, so that the model's
kind and limits are found exactly as for the source checkpoint) plus the graph and `manifest.json`:

    model.onnx (+ model.onnx.data)   the graph ONNX Runtime loads (optimized; int8 / fp16 when built so)
    m3engine-tokenizer.json          the tokenizer and its special ids, read without transformers
                                     (tokenization/source.py)
    manifest.json                    format, model facts, graph inputs/outputs, dtype, providers,
                                     tool versions, the source and its hash, validation result,
                                     and the sha256 of every file above

A load recomputes every hash and compares the model facts with the directory's config: a file that
was changed, truncated or swapped (a graph from another build, a config from another model) is
refused with the name of what differs, instead of serving wrong vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from m3engine.errors import ModelError
from m3engine.models.spec import ModelSpec

MANIFEST = "manifest.json"
GRAPH = "model.onnx"
FORMAT = "m3engine-onnx/1"
UNHASHED = {MANIFEST, "README.md"}  # written after the hashes, or documentation only


class ArtifactError(ModelError):
    """An ONNX artifact that is missing, corrupted, or does not match its model files."""


@dataclass(frozen=True)
class ModelFacts:
    """What the graph was built for; compared with the directory's config.json at load."""

    kind: str  # ModelKind value: bge-m3, embedding, reranker, classifier
    model_type: str
    hidden_size: int
    vocab_size: int
    pooling: str
    num_labels: int  # 0 for embedders
    colbert_dim: int | None  # BGE-M3 only

    @classmethod
    def of(cls, spec: ModelSpec, colbert_dim: int | None) -> ModelFacts:
        return cls(
            kind=spec.kind.value,
            model_type=spec.model_type,
            hidden_size=spec.hidden_size,
            vocab_size=spec.vocab_size,
            pooling=spec.pooling,
            num_labels=len(spec.labels),
            colbert_dim=colbert_dim,
        )


@dataclass
class Manifest:
    model: ModelFacts
    dtype: str  # fp32, fp16, int8
    inputs: list[str]  # graph input names, in order
    outputs: list[str]  # graph output names: dense, sparse, colbert, logits
    opset: int
    providers: list[str]  # what the artifact was built and validated for, in preference order
    source: dict[str, Any]  # path, sha256 of its weight files
    tools: dict[str, str]  # package versions that built it
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    build: dict[str, Any] = field(default_factory=dict)  # optimizer / quantization choices
    validation: dict[str, Any] | None = None
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        if data.get("format") != FORMAT:
            raise ArtifactError(
                f"{where}: manifest format {data.get('format')!r} is not {FORMAT!r}; rebuild the artifact "
                "with this version's `m3engine build`"
            )
        try:
            return cls(**{**data, "model": ModelFacts(**data["model"])})
        except (KeyError, TypeError) as error:
            raise ArtifactError(
                f"{where}: manifest is incomplete or has unknown fields ({error}); rebuild the artifact"
            ) from None


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_files(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(paths)}


def artifact_files(root: Path) -> list[Path]:
    """Every file of the artifact that its manifest must vouch for."""
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in UNHASHED]


def write_manifest(root: Path, manifest: Manifest, files: dict[str, str] | None = None) -> None:
    """Hash every file (or take `files`, hashes computed before) and write manifest.json."""
    manifest.files = files if files is not None else hash_files(root, artifact_files(root))
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True)
    (root / MANIFEST).write_text(text + "\n", encoding="utf-8")


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{root} is not an ONNX artifact (no {MANIFEST}); build one with "
            f"`m3engine build {root} --format onnx --out DIR` and pass --model DIR"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path} cannot be read as JSON ({error}); rebuild the artifact") from None
    return Manifest.from_json(data, path)


def verify(root: Path, spec: ModelSpec) -> Manifest:
    """The artifact's manifest, after checking every file's hash and the model facts.

    The ColBERT width is the manifest's, read from colbert_linear.pt at build time: that file's hash
    is checked with the others, so the load reads no torch file (an install without torch loads it).
    """
    manifest = read_manifest(root)
    listed = set(manifest.files)
    present = {p.relative_to(root).as_posix() for p in artifact_files(root)}
    if GRAPH not in listed:
        raise ArtifactError(f"{root}: the manifest lists no {GRAPH}; rebuild the artifact")
    missing = sorted(listed - present)
    if missing:
        raise ArtifactError(
            f"{root}: files listed in {MANIFEST} are missing: {missing}; copy the whole "
            "artifact directory or rebuild it"
        )
    changed = [name for name in sorted(listed) if sha256_file(root / name) != manifest.files[name]]
    if changed:
        raise ArtifactError(
            f"{root}: {changed} differ from the hashes in {MANIFEST} (corrupted, truncated or replaced "
            "after the build); rebuild the artifact with `m3engine build`"
        )
    facts = ModelFacts.of(spec, manifest.model.colbert_dim)
    if facts != manifest.model:
        diff = {
            k: (v, getattr(facts, k)) for k, v in asdict(manifest.model).items() if getattr(facts, k) != v
        }
        raise ArtifactError(
            f"{root}: the graph was built for another model than the files beside it describe "
            f"(field: (manifest, config) = {diff}); rebuild the artifact from the right checkpoint"
        )
    return manifest

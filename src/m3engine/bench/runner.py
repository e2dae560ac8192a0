"""One benchmark run: build (or open) the model, run its workloads and the baseline, check accuracy."""

from __future__ import annotations

import datetime
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3engine.accuracy.gate import ranking_metrics
from m3engine.accuracy.outputs import embedding_accuracy
from m3engine.bench import workloads
from m3engine.bench.hf import HFBaseline
from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine


@dataclass(frozen=True)
class BenchConfig:
    synthetic: str | None = "bge-m3"  # bge-m3 or bge-reranker-v2-m3; None: use `model`
    model: Path | None = None  # a real checkpoint directory instead of a synthetic one
    tokenizer: Path | None = None  # tokenizer files to copy into a synthetic checkpoint
    device: str = "cuda"
    dtype: str = "bf16"
    max_batch_tokens: int = 16384
    latency_lengths: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    passages: int = 2000  # lognormal lengths, median ~200 tokens, up to 2,048
    long_docs: int = 24  # 4 k - 8 k tokens
    rerank_passages: int = 100  # ~300 tokens each
    accuracy_texts: int = 200
    repeats: int = 3  # whole-corpus passes
    latency_repeats: int = 50  # per length at batch 1 (a third of it past 1,024 tokens)
    arch: Architecture = field(default_factory=Architecture)


def environment(device: str) -> dict[str, Any]:
    import transformers

    env = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or "cpu",
    }
    return env


def _model_path(config: BenchConfig, scratch: Path) -> tuple[Path, bool]:
    """(checkpoint directory, is a reranker)."""
    if config.model is not None:
        from m3engine.models.spec import inspect_model

        return config.model, inspect_model(config.model).is_cross_encoder
    assert config.synthetic is not None
    path = build_synthetic(config.synthetic, scratch / config.synthetic, config.tokenizer, config.arch)
    return path, config.synthetic == "bge-reranker-v2-m3"


def run(config: BenchConfig) -> dict[str, Any]:
    from tokenizers import Tokenizer

    report: dict[str, Any] = {"config": _jsonable(asdict(config)), "environment": environment(config.device)}
    with tempfile.TemporaryDirectory() as scratch:
        path, reranker = _model_path(config, Path(scratch))
        report["model"] = config.synthetic or str(config.model)
        engine = Engine.load(
            str(path),
            backend="fast",
            device=config.device,
            dtype=config.dtype,
            max_batch_tokens=config.max_batch_tokens,
        )
        report["environment"]["precision"] = getattr(engine.backend, "precision", config.dtype)
        hf = HFBaseline(path, cross_encoder=reranker, device=config.device)
        maker = TextMaker(Tokenizer.from_file(str(path / "tokenizer.json")))
        if reranker:
            report.update(_rerank_workloads(config, engine, hf, maker, path))
        else:
            report.update(_embed_workloads(config, engine, hf, maker, path))
    return report


def _embed_workloads(
    config: BenchConfig, engine: Engine, hf: HFBaseline, maker: TextMaker, path: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limit = engine.spec.max_length
    lengths = [n for n in config.latency_lengths if n <= limit]
    print("latency, batch 1", flush=True)
    out["latency"] = workloads.latency_ladder(engine, hf, maker, lengths, config.latency_repeats)
    print("throughput against batch size", flush=True)
    out["batch_sweep"] = workloads.batch_sweep(
        engine, hf, list(config.batch_sizes), min(512, limit), config.latency_repeats // 2 or 1
    )
    passages = maker.passages(config.passages, min(2048, limit))
    print("mixed-length passages", flush=True)
    out["passages"] = workloads.corpus(engine, hf, passages, min(2048, limit), config.repeats)
    if config.long_docs and limit >= 8192:
        docs = maker.long_documents(config.long_docs)
        print("long documents", flush=True)
        out["long_docs"] = workloads.corpus(engine, hf, docs, 8192, config.repeats)
    print("accuracy against the fp32 reference", flush=True)
    ref = Engine.load(str(path), backend="reference", device=config.device, dtype="fp32")
    subset = passages[: config.accuracy_texts]
    ours = engine.embed(
        subset, sparse=engine.spec.kind.value == "bge-m3", colbert=engine.spec.kind.value == "bge-m3"
    )
    theirs = ref.embed(
        subset, sparse=ref.spec.kind.value == "bge-m3", colbert=ref.spec.kind.value == "bge-m3"
    )
    out["accuracy"] = embedding_accuracy(ours, theirs)
    # the baseline's own half-precision error, for scale: what any fp16 run of this model gives
    base = hf.embed(subset, min(2048, limit))
    truth = np.stack([t.dense for t in theirs])  # type: ignore[misc]
    cos = (base * truth).sum(-1) / np.linalg.norm(truth, axis=-1)
    out["baseline_accuracy"] = {"dense_cos_mean": float(cos.mean()), "dense_cos_min": float(cos.min())}
    del ref
    return out


def _rerank_workloads(
    config: BenchConfig, engine: Engine, hf: HFBaseline, maker: TextMaker, path: Path
) -> dict[str, Any]:
    query = maker.text(24)
    passages = maker.texts(maker.uniform_lengths(config.rerank_passages, 250, 350))
    print("rerank, one query", flush=True)
    out: dict[str, Any] = {
        "rerank": workloads.rerank(engine, hf, query, passages, 512, config.latency_repeats // 2 or 1)
    }
    ref = Engine.load(str(path), backend="reference", device=config.device, dtype="fp32")
    ours, theirs = np.zeros(len(passages)), np.zeros(len(passages))
    for r in engine.rerank(query, passages, max_length=512):
        ours[r.index] = r.logit
    for r in ref.rerank(query, passages, max_length=512):
        theirs[r.index] = r.logit
    out["accuracy"] = ranking_metrics([ours], [theirs])  # one query's scores
    out["baseline_accuracy"] = ranking_metrics([hf.score(query, passages, 512)], [theirs])
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value

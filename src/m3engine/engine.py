"""The in-process API: Engine.embed / rerank / score / classify, synchronous and asyncio.

    >>> engine = Engine.load("BAAI/bge-m3", device="cpu")
    >>> out = engine.embed(["What is BGE-M3?"], dense=True, sparse=True, colbert=True)
    >>> out[0].dense.shape, out[0].sparse.to_dict(), out[0].colbert.shape

Inputs are validated and tokenized here, grouped under the token budget (`pipeline.run_all`) and run
through the backend; results come back with exactly one record per input, in input order. Work
larger than a batch runs through pipeline.py: tokenized in pieces on a few threads while the device
runs earlier batches, each batch launched before the one before it is collected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from m3engine.backends.base import Backend, BatchLimits, Pending
from m3engine.backends.choose import resolve_backend, resolve_devices, resolve_dtype, with_batch_tokens
from m3engine.backends.registry import create_backend
from m3engine.models.discovery import resolve_model_path
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec, inspect_model
from m3engine.precision.gated import gated_backend
from m3engine.precision.trial import trial_for
from m3engine.precision.verdict import Verdict
from m3engine.process import gcpause
from m3engine.results import Classification, Embedding, HybridScore, RerankResult
from m3engine.scheduling import pipeline
from m3engine.scheduling.devices import DeviceHealth, DevicePool
from m3engine.scheduling.pipeline import Progress, run_all
from m3engine.settings import EngineSettings
from m3engine.tasks import postprocess
from m3engine.tasks.builder import TaskBuilder
from m3engine.tasks.options import (
    ClassifyOptions,
    EmbedOptions,
    PairScoreOptions,
    RerankOptions,
    ScoreOptions,
    resolve,
)
from m3engine.tasks.prepared import Bulk, Prepared
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch, TokenIds

R = TypeVar("R")
log = logging.getLogger("m3engine.engine")


class Engine:
    def __init__(
        self,
        spec: ModelSpec,
        tokenizer: TextTokenizer,
        backend: Backend,
        settings: EngineSettings,
        *,
        backends: Sequence[Backend] = (),
        precision: Verdict | None = None,
        fallback: Backend | None = None,
    ):
        """`backends`: one per device of `--devices` (the first is `backend`); default: `backend` alone.

        `precision`: the accuracy gate's verdict when a reduced precision was tried at load (fp8 on
        request, bf16 for auto on a CPU: precision/trial.py).
        `fallback`: the standby backend of `--fallback` (the server's scheduler feeds it while no
        device of `backends` can take batches; scheduling/fallback.py)."""
        settings = with_batch_tokens(settings, backend.info.device)
        self.spec, self.tokenizer, self.backend, self.settings = spec, tokenizer, backend, settings
        self.precision, self.fallback = precision, fallback
        self.backends = list(backends) or [backend]
        self.health = DeviceHealth.of(self.backends)
        # One device keeps the plain path (no dispatch thread); several share the bulk work.
        self._pool = DevicePool(self.backends, self.health) if len(self.backends) > 1 else None
        self.tasks = TaskBuilder(spec, tokenizer, settings)
        self.max_length = self.tasks.max_length
        self.query_max_length = self.tasks.query_max_length
        self._lock = threading.Lock()  # one launch at a time per backend (base.Backend's contract)

    @classmethod
    def load(cls, model: str = "BAAI/bge-m3", **overrides: Any) -> Engine:
        """Load a model by hub id or path; keyword arguments are EngineSettings fields.

        `devices="0,1"` (or "all") loads one backend per device: bulk calls send each batch to the
        healthy device with the fewest queued tokens (scheduling/devices.py)."""
        return cls.from_settings(EngineSettings(model=model, **overrides))

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> Engine:
        settings.check()
        path = resolve_model_path(settings.model, revision=settings.revision)
        kind = ModelKind.parse(settings.kind) if settings.kind else None
        spec = inspect_model(path, name=settings.model, kind=kind)
        tokenizer = TextTokenizer.load(path)
        tokens = TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids)
        backends: list[Backend] = []  # one per device
        verdict: Verdict | None = None
        for device in resolve_devices(settings.devices, settings.device, settings.backend):
            name = resolve_backend(settings.backend, device)
            dtype = resolve_dtype(settings.dtype, device, name, spec.is_cross_encoder)

            def make(backend: str, dtype: str, device: str = device) -> Backend:
                return create_backend(backend, spec=spec, tokens=tokens, device=device, dtype=dtype)

            # measured on the first device, applied to all
            trial = None if verdict else trial_for(settings.dtype, dtype, device, name, spec.is_cross_encoder)
            if trial is not None:
                backend, verdict = gated_backend(spec, tokenizer, settings, device, make, trial)
                backends.append(backend)
                continue
            backends.append(make(name, verdict.served if verdict is not None else dtype))
        fallback: Backend | None = None
        if settings.fallback_device is not None:  # the path `auto` picks there, whatever --backend says
            device = settings.fallback_device
            name = resolve_backend("auto", device)
            dtype = resolve_dtype("auto", device, name, spec.is_cross_encoder)
            fallback = create_backend(name, spec=spec, tokens=tokens, device=device, dtype=dtype)
        engine = cls(
            spec, tokenizer, backends[0], settings, backends=backends, precision=verdict, fallback=fallback
        )
        if settings.warmup:
            engine.warmup()
        return engine

    @property
    def limits(self) -> BatchLimits:
        """The shapes this engine's batches can take."""
        s = self.settings
        return BatchLimits(s.batch_tokens, s.max_batch_size, self.max_length, self.tasks.head_requests())

    def warmup(self) -> None:
        """Prepare every backend for every batch shape within `limits` (EngineSettings.warmup)."""
        start = time.perf_counter()
        self.tokenizer.encode(["warm up"] * 8, max_length=16)  # the Rust tokenizer's thread pool starts
        for backend in self.backends:
            backend.warmup(self.limits)
        if self.fallback is not None:  # the batches its worker forms: its own budget
            budget = self.settings.fallback_batch_tokens
            self.fallback.warmup(dataclasses.replace(self.limits, max_tokens=budget))
        log.info(
            "warmed up",
            extra={"model": self.spec.name, "seconds": round(time.perf_counter() - start, 2)},
        )

    def info(self) -> dict[str, Any]:
        """What the model is and how it runs (the CLI's `info`, the server's /info)."""
        return {
            "model": self.spec.name,
            "path": str(self.spec.path),
            "kind": self.spec.kind.value,
            "model_type": self.spec.model_type,
            "hidden_size": self.spec.hidden_size,
            "dense_dim": None if self.spec.is_cross_encoder else self.spec.hidden_size,
            "colbert_dim": self.backend.info.colbert_dim,
            "pooling": None if self.spec.is_cross_encoder else self.spec.pooling,
            "labels": list(self.spec.labels),
            "model_max_length": self.spec.max_length,
            "max_length": self.max_length,
            "query_max_length": self.query_max_length,
            "backend": self.backend.info.name,
            "device": self.backend.info.device,
            "dtype": self.backend.info.dtype,
            "dtype_requested": self.settings.dtype,
            "precision": None if self.precision is None else self.precision.public(),
            "devices": [
                {**health, "backend": b.info.name, "dtype": b.info.dtype}
                for health, b in zip(self.health.describe(), self.backends, strict=True)
            ],
            "fallback": None if self.fallback is None else _describe(self.fallback),
        }

    # ---- tasks: options built once (options.py), the task by TaskBuilder, run here ------------
    def embed(
        self,
        texts: str | Sequence[str],
        *,
        options: EmbedOptions | None = None,
        progress: Progress | None = None,
        **keywords: Any,
    ) -> list[Embedding]:
        """Dense, sparse and ColBERT outputs of each text from one forward pass.

        Keywords are the fields of `EmbedOptions` (its docstring says what each does), applied over
        `options` when both are given; each task method below takes its options the same way.
        Dense and sparse are float32; ColBERT rows are float32, or float16 when the encoder runs in
        bf16/fp16 (FlagEmbedding's fp16).
        """
        task = self.tasks.embed_bulk(texts, resolve(EmbedOptions, options, keywords))
        return self._bulk(task, progress)

    def score(
        self,
        pairs: Sequence[Sequence[str]],
        weights: Sequence[float] | None = None,
        *,
        options: ScoreOptions | None = None,
        **keywords: Any,
    ) -> list[HybridScore]:
        """FlagEmbedding's `compute_score` for (query, passage) pairs: dense, sparse, ColBERT, hybrids.

        `weights` (of dense, sparse, ColBERT) may come second, as in FlagEmbedding; see `ScoreOptions`."""
        if weights is not None:
            keywords["weights"] = weights
        return self._bulk(self.tasks.score_bulk(pairs, resolve(ScoreOptions, options, keywords)))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        options: RerankOptions | None = None,
        **keywords: Any,
    ) -> list[RerankResult]:
        """Documents ranked by relevance to the query, best first; `index` is the input position.

        Options: `RerankOptions`."""
        chosen = resolve(RerankOptions, options, keywords)
        if chosen.chunked:  # windows of one document are not one sequence each: no Bulk form
            return self.execute(self.tasks.rerank(query, documents, chosen))
        return self._bulk(self.tasks.rerank_bulk(query, documents, chosen))

    def score_pairs(
        self, pairs: Sequence[Sequence[str]], *, options: PairScoreOptions | None = None, **keywords: Any
    ) -> list[float]:
        """FlagReranker's `compute_score`: one relevance score per (query, passage) pair, in order.

        Options: `PairScoreOptions`."""
        return self._bulk(self.tasks.score_pairs_bulk(pairs, resolve(PairScoreOptions, options, keywords)))

    def classify(
        self, texts: str | Sequence[str], *, options: ClassifyOptions | None = None, **keywords: Any
    ) -> list[Classification]:
        """The label of each text: softmax over labels (sigmoid for one label or multi-label models).

        Options: `ClassifyOptions`."""
        return self._bulk(self.tasks.classify_bulk(texts, resolve(ClassifyOptions, options, keywords)))

    # ---- asyncio forms ----------------------------------------------------------------------
    async def aembed(self, texts: str | Sequence[str], **kwargs: Any) -> list[Embedding]:
        return await asyncio.to_thread(self.embed, texts, **kwargs)

    async def arerank(self, query: str, documents: Sequence[str], **kwargs: Any) -> list[RerankResult]:
        return await asyncio.to_thread(self.rerank, query, documents, **kwargs)

    async def ascore(self, pairs: Sequence[Sequence[str]], **kwargs: Any) -> list[HybridScore]:
        return await asyncio.to_thread(self.score, pairs, **kwargs)

    async def ascore_pairs(self, pairs: Sequence[Sequence[str]], **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(self.score_pairs, pairs, **kwargs)

    async def aclassify(self, texts: str | Sequence[str], **kwargs: Any) -> list[Classification]:
        return await asyncio.to_thread(self.classify, texts, **kwargs)

    # ---- internals --------------------------------------------------------------------------
    def execute(self, task: Prepared[R], progress: Progress | None = None) -> R:
        """Run a prepared task's sequences under the token budget and finish it."""
        return task.finish(self._run(task.encoded, task.heads, progress))

    def _launch(self, batch: PackedBatch, heads: HeadRequest) -> Pending:
        if self._pool is not None:
            return self._pool.launch(batch, heads)
        with self._lock:
            return self.backend.launch(batch, heads)

    def _run(self, encoded: list[Encoded], heads: HeadRequest, progress: Progress | None) -> BatchOutputs:
        """Forward every input under the token budget; outputs come back in input order."""
        if len(encoded) == 1:  # batch 1: one batch in input order, nothing to plan or overlap
            out = self._launch(PackedBatch.from_encoded(encoded), heads).result()
            if progress is not None:
                progress(1, len(encoded[0]))
            return postprocess.gather([([0], out)], 1)
        s = self.settings
        padded = self.backend.info.padded
        return run_all(
            self._launch,
            encoded,
            heads,
            s.batch_tokens,
            s.max_batch_size,
            padded,
            progress,
            self._in_flight,
        )

    def _bulk(self, bulk: Bulk[R], progress: Progress | None = None) -> R:
        """Many inputs: tokenized in pieces while the device runs (pipeline.py).

        Not for a padded backend (it wants the whole list sorted at once: pieces would cost it
        padding) nor for work smaller than the pipeline's first piece (one piece is the whole list).
        Python's cyclic collector is off while the pipeline runs (gcpause.py).
        """
        budget, max_size = self.settings.batch_tokens, self.settings.max_batch_size
        small = len(bulk.sizes) < 2 or sum(bulk.sizes) <= budget // pipeline.FIRST_PIECE
        if self.backend.info.padded or small:
            return self.execute(bulk.prepare(), progress)
        with gcpause.gc_paused():
            return pipeline.run_bulk(
                bulk, self._launch, budget, max_size, progress=progress, in_flight=self._in_flight
            )

    @property
    def _in_flight(self) -> int:
        return 1 if self._pool is None else self._pool.depth


def _describe(backend: Backend) -> dict[str, str]:
    return {"backend": backend.info.name, "device": backend.info.device, "dtype": backend.info.dtype}

"""The bulk pipeline (pipeline.py) against the whole-list path, and the fast backend's launch/collect.

The fast backend runs on the CPU here (fp32), so `launch` is synchronous underneath, but the code
path is the GPU's: launch batch i + 1, then collect batch i. A tiny token budget cuts every call
into many pieces and batches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3engine import Engine
from m3engine.backends.fast import FastBackend
from m3engine.errors import BackendError, InputTooLongError
from m3engine.models.spec import inspect_model
from m3engine.results import Embedding
from m3engine.scheduling import pipeline
from m3engine.settings import EngineSettings
from m3engine.tasks.options import EmbedOptions, RerankOptions
from m3engine.tasks.prepared import Bulk
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch, TokenIds
from tests.fakes import FakeBackend
from tests.texts import LONG, MULTILINGUAL

ALL = HeadRequest(dense=True, sparse=True, colbert=True)
TEXTS = [f"{MULTILINGUAL[i % len(MULTILINGUAL)]} {i}" + " more words" * (i % 7) for i in range(60)]


@pytest.fixture
def pieces(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every piece the pipeline tokenizes, so a test can tell that it ran in pieces."""
    seen: list[tuple[int, int]] = []
    original = Bulk.piece

    def spy(self: Bulk[Any], start: int, stop: int) -> list[Encoded]:
        seen.append((start, stop))
        return original(self, start, stop)

    monkeypatch.setattr(Bulk, "piece", spy)
    return seen


@pytest.fixture(scope="module")
def fast_m3(bge_m3_dir: Path) -> Engine:
    return Engine.load(str(bge_m3_dir), backend="fast", device="cpu", dtype="fp32", max_batch_tokens=96)


@pytest.fixture(scope="module")
def fast_reranker(reranker_dir: Path) -> Engine:
    return Engine.load(str(reranker_dir), backend="fast", device="cpu", dtype="fp32", max_batch_tokens=96)


def _fake_engine(path: Path, **settings: Any) -> tuple[Engine, FakeBackend]:
    """The fake backend as an unpacked one (padded=False), so the engine pipelines its work."""
    spec = inspect_model(path)
    tokenizer = TextTokenizer.load(path)
    backend = FakeBackend(spec, TokenIds(tokenizer.pad_id, tokenizer.special_ids), padded=False)
    return Engine(spec, tokenizer, backend, EngineSettings(model=str(path), **settings)), backend


def _same_embeddings(a: list[Embedding], b: list[Embedding]) -> None:
    assert [r.index for r in a] == [r.index for r in b] == list(range(len(b)))
    for x, y in zip(a, b, strict=True):
        assert (x.num_tokens, x.truncated) == (y.num_tokens, y.truncated)
        np.testing.assert_allclose(x.dense, y.dense, atol=1e-6)
        assert x.sparse is not None and y.sparse is not None
        assert x.sparse.indices.tolist() == y.sparse.indices.tolist()
        np.testing.assert_allclose(x.sparse.values, y.sparse.values, atol=1e-5)
        assert x.colbert is not None and y.colbert is not None and x.colbert.shape == y.colbert.shape
        np.testing.assert_allclose(x.colbert, y.colbert, atol=1e-5)


# ---- pieces and the window ------------------------------------------------------------------
def test_pieces_start_small_double_taper_and_cover_every_input_once() -> None:
    pieces = pipeline.cut_pieces([10] * 100, first=25, largest=100)
    sizes = [b - a for a, b in pieces]
    assert sizes[:4] == [2, 5, 10, 10] and sizes[-4:] == [6, 3, 2, 2], sizes  # tokens 20, 50, 100 ... 20
    assert [a for a, _ in pieces[1:]] == [b for _, b in pieces[:-1]] and pieces[0][0] == 0
    assert pieces[-1][1] == 100
    assert pipeline.cut_pieces([500, 1], first=10, largest=10) == [(0, 1), (1, 2)]  # inputs stay whole
    assert pipeline.cut_pieces([], first=10, largest=10) == []


def test_window_gives_the_longest_batch_first_under_the_budget() -> None:
    window = pipeline.Window()
    window.add(10, [Encoded(ids=[0] * n) for n in (5, 40, 7, 30)])  # inputs 10..13
    assert window.full(budget=64, max_size=8)
    assert window.take(budget=64, max_size=8, padded=False) == [11]  # 40 + 30 > 64
    assert window.take(budget=64, max_size=8, padded=False) == [13, 12, 10]
    assert len(window) == 0 and window.tokens == 0


# ---- pipelined == whole-list ----------------------------------------------------------------
def test_embed_pipelined_equals_the_whole_list(fast_m3: Engine, pieces: list[tuple[int, int]]) -> None:
    texts = [*TEXTS, LONG, LONG[:500]]
    whole = fast_m3.execute(fast_m3.tasks.embed(texts, EmbedOptions(sparse=True, colbert=True)))
    assert not pieces  # prepare() is one encode call, not pieces
    piped = fast_m3.embed(texts, sparse=True, colbert=True)
    assert len(pieces) > 3, pieces
    _same_embeddings(piped, whole)


def test_query_embeddings_and_dimensions_through_the_pipeline(fast_m3: Engine) -> None:
    options = EmbedOptions(input_type="query", max_length=16, dimensions=8)
    piped = fast_m3.embed(TEXTS, options=options)
    whole = fast_m3.execute(fast_m3.tasks.embed(TEXTS, options))
    assert all(r.num_tokens <= 16 and r.dense is not None and r.dense.shape == (8,) for r in piped)
    np.testing.assert_allclose([r.dense for r in piped], [r.dense for r in whole], atol=1e-6)


def test_hybrid_score_pipelined_equals_the_whole_list(fast_m3: Engine, pieces: list[tuple[int, int]]) -> None:
    pairs = [(TEXTS[i % 7], TEXTS[i]) for i in range(40)]  # 7 distinct queries, then the passages
    piped = fast_m3.score(pairs)
    assert len(pieces) > 1
    whole = fast_m3.execute(fast_m3.tasks.score(pairs))
    for a, b in zip(piped, whole, strict=True):
        assert a.dense == pytest.approx(b.dense, abs=1e-6)
        assert a.sparse == pytest.approx(b.sparse, abs=1e-5)
        assert a.colbert == pytest.approx(b.colbert, abs=1e-5)


def test_rerank_pipelined_equals_the_whole_list(fast_reranker: Engine, pieces: list[tuple[int, int]]) -> None:
    docs = TEXTS[:50]
    piped = fast_reranker.rerank("what is the capital?", docs, top_n=20, return_documents=True)
    assert len(pieces) > 3
    whole = fast_reranker.execute(
        fast_reranker.tasks.rerank("what is the capital?", docs, RerankOptions(top_n=20))
    )
    assert [r.index for r in piped] == [r.index for r in whole] and len(piped) == 20
    for a, b in zip(piped, whole, strict=True):
        assert a.logit == pytest.approx(b.logit, abs=1e-5) and a.num_tokens == b.num_tokens
        assert a.document == docs[a.index]


def test_score_pairs_and_classify_pipelined(fast_reranker: Engine) -> None:
    pairs = [(TEXTS[i], TEXTS[-i - 1]) for i in range(30)]
    scores = fast_reranker.score_pairs(pairs)
    expected = fast_reranker.execute(fast_reranker.tasks.score_pairs(pairs))
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    labels = fast_reranker.classify(TEXTS)
    expected_labels = fast_reranker.execute(fast_reranker.tasks.classify(TEXTS))
    assert [r.index for r in labels] == list(range(len(TEXTS)))
    np.testing.assert_allclose([r.score for r in labels], [r.score for r in expected_labels], atol=1e-6)


# ---- order, progress, errors (the fake backend: outputs are functions of each input's ids) --------
def test_every_input_once_in_order_and_progress_adds_up(bge_m3_dir: Path) -> None:
    engine, backend = _fake_engine(bge_m3_dir, max_batch_tokens=64, max_batch_size=5)
    done: list[tuple[int, int]] = []
    records = engine.embed(TEXTS, sparse=True, progress=lambda n, t: done.append((n, t)))
    assert [r.index for r in records] == list(range(len(TEXTS)))
    assert len(backend.seen) == len(TEXTS) and max(backend.batches) <= 5 and len(backend.batches) > 5
    assert sum(n for n, _ in done) == len(TEXTS) and len(done) == len(backend.batches)
    assert sum(t for _, t in done) == sum(r.num_tokens for r in records)
    encoded = engine.tokenizer.encode(TEXTS, engine.max_length)
    for record, enc in zip(records, encoded, strict=True):  # each record is its own text's
        vector = backend.dense_of(enc.ids)
        np.testing.assert_allclose(record.dense, vector / np.linalg.norm(vector), atol=1e-6)


def test_embed_records_are_built_as_each_batch_is_collected(
    bge_m3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the last batch's records are left after the last batch: each is built when collected."""
    from m3engine.tasks import embed as tasks

    engine, backend = _fake_engine(bge_m3_dir, max_batch_tokens=64, max_batch_size=5)
    events: list[tuple[str, int]] = []
    build = tasks.embeddings

    def recorded(encoded: list[Encoded], *args: Any) -> list[Embedding]:
        events.append(("records", len(encoded)))
        return build(encoded, *args)

    monkeypatch.setattr(tasks, "embeddings", recorded)
    done = engine.embed(TEXTS, dimensions=8, progress=lambda n, t: events.append(("batch", n)))
    assert [e for e in events if e[0] == "records"] == [("records", n) for n in backend.batches]
    assert events[-2:] == [("records", backend.batches[-1]), ("batch", backend.batches[-1])]
    assert [r.index for r in done] == list(range(len(TEXTS)))
    whole = engine.execute(engine.tasks.embed(TEXTS, EmbedOptions(dimensions=8)))
    np.testing.assert_allclose([r.dense for r in done], [r.dense for r in whole], atol=1e-6)
    assert all(r.dense is not None and r.dense.shape == (8,) for r in done)


def test_one_text_runs_as_one_batch_like_in_a_batch(bge_m3_dir: Path) -> None:
    """Batch 1 skips planning and the collector (engine._run): same record, progress once."""
    engine, backend = _fake_engine(bge_m3_dir)
    done: list[tuple[int, int]] = []
    (record,) = engine.embed([TEXTS[3]], sparse=True, colbert=True, progress=lambda n, t: done.append((n, t)))
    assert backend.batches == [1] and done == [(1, record.num_tokens)]
    batched = engine.embed(TEXTS[:5], sparse=True, colbert=True)[3]
    batched.index = 0
    _same_embeddings([record], [batched])


def test_an_over_long_text_in_a_later_piece_fails_the_call(
    bge_m3_dir: Path, pieces: list[tuple[int, int]]
) -> None:
    engine, _ = _fake_engine(bge_m3_dir, max_batch_tokens=64)
    texts = [*TEXTS, LONG, *TEXTS]  # LONG is input 60, far past the first piece
    with pytest.raises(InputTooLongError, match=r"^input 60 has"):
        engine.embed(texts, truncate=False)
    assert pieces[0][0] == 0 and any(a > 0 for a, _ in pieces)
    assert len(engine.embed(TEXTS)) == len(TEXTS)  # the engine carries on


def _one_slow_piece(
    monkeypatch: pytest.MonkeyPatch, slow: Callable[[int, int], bool]
) -> list[tuple[int, int]]:
    """Pieces as they finish; the first piece for which `slow(start, stop)` holds takes 0.5 s longer."""
    finished: list[tuple[int, int]] = []
    original, lock, slowed = Bulk.piece, threading.Lock(), []

    def piece(self: Bulk[Any], start: int, stop: int) -> list[Encoded]:
        with lock:
            wait = not slowed and slow(start, stop)
            if wait:
                slowed.append((start, stop))
        if wait:
            time.sleep(0.5)
        try:
            return original(self, start, stop)
        finally:
            finished.append((start, stop))

    monkeypatch.setattr(Bulk, "piece", piece)
    return finished


def test_finished_pieces_feed_batches_while_an_earlier_piece_is_slow(
    bge_m3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = _fake_engine(bge_m3_dir, max_batch_tokens=64)
    finished = _one_slow_piece(monkeypatch, lambda start, stop: start > 0)
    launches: list[tuple[int, list[tuple[int, int]]]] = []  # (last input in the batch, pieces done)
    launch = pipeline.Collector.launch

    def spy(self: pipeline.Collector, indices: list[int], items: Any) -> None:
        launches.append((max(indices), list(finished)))
        launch(self, indices, items)

    monkeypatch.setattr(pipeline.Collector, "launch", spy)
    records = engine.embed(TEXTS * 4)
    assert [r.index for r in records] == list(range(4 * len(TEXTS)))
    slow_start, slow_stop = min((p for p in finished if p[0] > 0), key=lambda p: p[0])
    # a batch held inputs past the slow piece before that piece had finished
    assert any(last >= slow_stop and (slow_start, slow_stop) not in done for last, done in launches)


def test_an_error_names_the_first_input_whatever_piece_fails_first(
    bge_m3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = _fake_engine(bge_m3_dir, max_batch_tokens=64)
    finished = _one_slow_piece(monkeypatch, lambda start, stop: start <= 60 < stop)
    texts = [*TEXTS, LONG, *TEXTS, *TEXTS, LONG, *TEXTS]  # inputs 60 and 181 are too long
    with pytest.raises(InputTooLongError, match=r"^input 60 has"):
        engine.embed(texts, truncate=False)
    assert any(start <= 181 < stop for start, stop in finished)  # the later error was found first


def test_a_failing_later_batch_fails_the_call(bge_m3_dir: Path) -> None:
    engine, backend = _fake_engine(bge_m3_dir, max_batch_tokens=64)
    calls = iter(range(1000))
    backend.fail_if = lambda batch: next(calls) == 4
    with pytest.raises(BackendError):
        engine.embed(TEXTS)
    backend.fail_if = None
    assert len(engine.embed(TEXTS)) == len(TEXTS)


def test_small_work_and_padded_backends_take_the_whole_list_path(
    bge_m3_dir: Path, bge_m3: Engine, pieces: list[tuple[int, int]]
) -> None:
    engine, _ = _fake_engine(bge_m3_dir)
    engine.embed(TEXTS[:3])  # far under a quarter of a batch
    bge_m3.embed(TEXTS)  # the reference backend pads
    assert not pieces


# ---- the fast backend's launch / collect ---------------------------------------------------
def test_launch_before_collect_equals_forward(bge_m3_dir: Path) -> None:
    spec = inspect_model(bge_m3_dir)
    tokenizer = TextTokenizer.load(bge_m3_dir)
    backend = FastBackend(spec, TokenIds(tokenizer.pad_id, tokenizer.special_ids))
    batches = [PackedBatch.from_encoded(tokenizer.encode(TEXTS[i : i + 9], 64)) for i in (0, 9, 18)]
    expected = [backend.forward(b, ALL) for b in batches]
    pending = [backend.launch(b, ALL) for b in batches]  # all three launched, none collected yet
    for p, want in zip(reversed(pending), reversed(expected), strict=True):
        got: BatchOutputs = p.result()
        assert p.done()
        np.testing.assert_array_equal(got.dense, want.dense)
        assert got.colbert is not None and want.colbert is not None
        for g, w in zip(got.colbert, want.colbert, strict=True):
            np.testing.assert_array_equal(g, w)
        assert got.sparse is not None and want.sparse is not None
        assert [s.to_dict() for s in got.sparse] == [s.to_dict() for s in want.sparse]


def test_the_first_batch_runs_before_later_pieces_are_tokenized(
    bge_m3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces after the first two wait until a batch has been launched: without overlap, a deadlock."""
    engine, backend = _fake_engine(bge_m3_dir, max_batch_tokens=64)
    launched = threading.Event()
    original_piece, original_forward = Bulk.piece, backend.forward

    def piece(self: Bulk[Any], start: int, stop: int) -> list[Encoded]:
        if start > 4:
            assert launched.wait(timeout=20), "no batch launched while pieces were pending"
        return original_piece(self, start, stop)

    def forward(batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        launched.set()
        return original_forward(batch, heads)

    monkeypatch.setattr(Bulk, "piece", piece)
    backend.forward = forward  # type: ignore[method-assign]
    assert [r.index for r in engine.embed(TEXTS)] == list(range(len(TEXTS)))


def test_the_first_piece_is_tokenized_alone(bge_m3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No other piece starts before the first is done: beside others it took 4x longer (H200 host)."""
    monkeypatch.setattr(pipeline, "available_cpus", lambda: 4)  # threads to start other pieces with
    engine, _ = _fake_engine(bge_m3_dir, max_batch_tokens=64)
    events: list[str] = []
    lock = threading.Lock()
    original = Bulk.piece

    def piece(self: Bulk[Any], start: int, stop: int) -> list[Encoded]:
        with lock:
            events.append(f"start {start}")
        if start == 0:
            time.sleep(0.05)  # room for other threads to start pieces, were they allowed to
        out = original(self, start, stop)
        with lock:
            events.append(f"done {start}")
        return out

    monkeypatch.setattr(Bulk, "piece", piece)
    assert [r.index for r in engine.embed(TEXTS)] == list(range(len(TEXTS)))
    assert events[:2] == ["start 0", "done 0"]
    assert sum(e.startswith("start") for e in events) > 4  # many pieces, others in parallel after


def test_each_batch_is_launched_before_the_one_before_it_is_collected(fast_m3: Engine) -> None:
    """Batch i + 1 is queued before batch i is collected, and collecting (waiting for the copies,
    copying out, building records) runs on the collecting thread, not the launching one."""
    events: list[str] = []
    threads: set[str] = set()
    backend = fast_m3.backend
    assert isinstance(backend, FastBackend)

    class Recorded:
        def __init__(self, n: int, inner: Any) -> None:
            self.n, self.inner = n, inner

        def done(self) -> bool:
            return bool(self.inner.done())

        def result(self) -> BatchOutputs:
            events.append(f"collect {self.n}")
            threads.add(threading.current_thread().name)
            return self.inner.result()  # type: ignore[no-any-return]

    def launch(batch: PackedBatch, heads: HeadRequest) -> Recorded:
        n = sum(e.startswith("launch") for e in events)
        events.append(f"launch {n}")
        return Recorded(n, backend.launch(batch, heads))

    encoded = fast_m3.tokenizer.encode(TEXTS[:12], 64)
    out = pipeline.run_planned(launch, encoded, [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9, 10, 11]], ALL, None)
    assert sorted(events) == sorted([f"launch {i}" for i in range(4)] + [f"collect {i}" for i in range(4)])
    for i in range(3):
        assert events.index(f"launch {i + 1}") < events.index(f"collect {i}")
    assert [e for e in events if e.startswith("collect")] == [f"collect {i}" for i in range(4)]  # in order
    assert len(threads) == 1 and threads.pop().startswith("m3engine-collect")
    assert out.dense is not None and out.dense.shape[0] == 12


def test_long_inputs_get_fewer_tokenizer_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "available_cpus", lambda: 16)
    assert pipeline.default_threads([8192] * 24) == 2  # long documents: Rust spreads each one
    assert pipeline.default_threads([300, 1500, 2048] * 100) == 4  # passages
    monkeypatch.setattr(pipeline, "available_cpus", lambda: 1)
    assert pipeline.default_threads([300] * 10) == 1

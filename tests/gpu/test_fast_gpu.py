"""The fast backend on CUDA: half-precision parity within the accuracy gate, graphs, 8,192 tokens.

Run on the device machine: `pytest -m gpu tests/gpu`. Skipped where torch sees no CUDA device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3engine.backends.base import BatchLimits
from m3engine.backends.fast import FastBackend
from m3engine.backends.fast.backend import DeviceStates
from m3engine.backends.reference import ReferenceBackend
from m3engine.models.spec import inspect_model
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch, TokenIds
from tests.texts import MULTILINGUAL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ALL = HeadRequest(dense=True, sparse=True, colbert=True)


def _backends(path: Path, dtype: str, **options: Any) -> tuple[FastBackend, ReferenceBackend, TextTokenizer]:
    spec = inspect_model(path)
    tokenizer = TextTokenizer.load(path)
    tokens = TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids)
    return (
        FastBackend(spec, tokens, device="cuda", dtype=dtype, **options),
        ReferenceBackend(spec, tokens, device="cuda", dtype="fp32"),
        tokenizer,
    )


def _states(fast: FastBackend, batch: PackedBatch, use_graphs: bool, cls_only: bool = False) -> DeviceStates:
    """The backend's final states of `batch` (graph-replayed when `use_graphs` and one fits)."""
    with torch.inference_mode():
        return fast._hidden_states(batch, use_graphs, cls_only)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _check_gate(
    fast: BatchOutputs,
    ref: BatchOutputs,
    min_overlap: float = 0.95,
    cos_mean: float = 0.9999,
    cos_min: float = 0.999,
    colbert_min: float = 0.999,
) -> None:
    """The issue's bf16/fp16 gate: dense cosine mean >= 0.9999 and min >= 0.999; sparse top-10
    overlap >= 0.95; ColBERT vectors' cosine >= 0.999."""
    assert fast.dense is not None and ref.dense is not None
    cos = _cosines(fast.dense, ref.dense)
    assert cos.mean() >= cos_mean and cos.min() >= cos_min, (cos.mean(), cos.min())
    if fast.sparse is not None and ref.sparse is not None:
        overlaps = []
        for f, r in zip(fast.sparse, ref.sparse, strict=True):
            k = min(10, len(r.indices))
            if k:
                overlaps.append(len(set(f.top_k(k).indices) & set(r.top_k(k).indices)) / k)
        assert np.mean(overlaps) >= min_overlap, np.mean(overlaps)
    if fast.colbert is not None and ref.colbert is not None:
        for f, r in zip(fast.colbert, ref.colbert, strict=True):
            assert f.shape == r.shape
            if len(r):
                assert (f * r).sum(-1).min() >= colbert_min


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_within_gate(long_dir: Path, dtype: str) -> None:
    """A checkpoint with a trained model's weight scale (init std 0.02), texts of 1 to 600 tokens."""
    fast, ref, _ = _backends(long_dir, dtype)
    rng = np.random.default_rng(2)
    batch = PackedBatch.from_encoded([_random_text(rng, int(n)) for n in rng.integers(1, 600, 40)])
    ours = fast.forward(batch, ALL)
    _check_gate(ours, ref.forward(batch, ALL))
    # FlagEmbedding's use_fp16 dtypes: ColBERT float16 (half the bytes to copy), dense and sparse float32
    assert ours.colbert is not None and {c.dtype for c in ours.colbert} == {np.dtype(np.float16)}
    assert ours.dense is not None and ours.dense.dtype == np.float32
    assert ours.sparse is not None and ours.sparse[0].values.dtype == np.float32


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_no_worse_than_transformers(bge_m3_dir: Path, dtype: str) -> None:
    """The tiny checkpoint's weights are 20x a trained model's (init 0.4), which amplifies rounding
    beyond the gate for any half-precision run; ours must stay as close to fp32 as transformers'."""
    fast, ref, tokenizer = _backends(bge_m3_dir, dtype)
    half = ReferenceBackend(fast.spec, TokenIds(tokenizer.pad_id, tokenizer.special_ids), "cuda", dtype)
    batch = PackedBatch.from_encoded(tokenizer.encode([*MULTILINGUAL, " ".join(MULTILINGUAL)], 128))
    truth = ref.forward(batch, ALL).dense
    ours, theirs = fast.forward(batch, ALL).dense, half.forward(batch, ALL).dense
    assert truth is not None and ours is not None and theirs is not None
    our_error = float((1 - _cosines(ours, truth)).mean())
    their_error = float((1 - _cosines(theirs, truth)).mean())
    assert our_error <= 2 * their_error + 1e-5, (our_error, their_error)


def test_fp32_on_cuda_matches_reference(bge_m3_dir: Path) -> None:
    fast, ref, tokenizer = _backends(bge_m3_dir, "fp32")
    batch = PackedBatch.from_encoded(tokenizer.encode(MULTILINGUAL, 128))
    f, r = fast.forward(batch, ALL), ref.forward(batch, ALL)
    assert f.dense is not None and r.dense is not None
    np.testing.assert_allclose(f.dense, r.dense, atol=1e-3, rtol=1e-3)  # TF32 may be on for matmuls


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_minilm_real_weights_within_gate(request: pytest.FixtureRequest, dtype: str) -> None:
    fast, ref, tokenizer = _backends(request.getfixturevalue("minilm_dir"), dtype)
    batch = PackedBatch.from_encoded(tokenizer.encode(MULTILINGUAL * 4, 256))
    _check_gate(fast.forward(batch, HeadRequest(dense=True)), ref.forward(batch, HeadRequest(dense=True)))


def test_reranker_half_precision_keeps_the_ranking(reranker_dir: Path) -> None:
    """fp16, the cross-encoders' default on CUDA: bf16 reorders close logits (Spearman 0.98 here)."""
    from scipy.stats import spearmanr

    fast, ref, tokenizer = _backends(reranker_dir, "fp16")
    queries = [MULTILINGUAL[0]] * (len(MULTILINGUAL) - 1)
    batch = PackedBatch.from_encoded(tokenizer.encode_pairs(queries, MULTILINGUAL[1:], 128, 96))
    f = fast.forward(batch, HeadRequest(logits=True)).logits
    r = ref.forward(batch, HeadRequest(logits=True)).logits
    assert f is not None and r is not None
    assert spearmanr(f[:, 0], r[:, 0]).statistic >= 0.99


def test_long_only_batch_takes_per_sequence_sdpa_and_matches_varlen(long_dir: Path) -> None:
    """The backend attends a batch of only long sequences one sequence at a time; the same batch
    through the same fused encoder with the varlen Triton kernel agrees."""
    from m3engine.backends.fast.encoder import per_sequence_faster, to_device
    from m3engine.backends.fast.fused import encode_fused
    from m3engine.backends.fast.varlen_attention import plan_attention

    fast, _, _ = _backends(long_dir, "bf16")
    rng = np.random.default_rng(4)
    batch = PackedBatch.from_encoded([_random_text(rng, 3000), _random_text(rng, 2500)])
    assert per_sequence_faster(tuple(batch.lengths.tolist()))
    sdpa = _states(fast, batch, use_graphs=False).hidden
    inputs = to_device(batch, fast.weights.config.position_offset, torch.device("cuda"))
    with torch.inference_mode():
        varlen = encode_fused(fast.weights, plan_attention(inputs), None, varlen=True)
    cos = torch.nn.functional.cosine_similarity(sdpa.float(), varlen.float(), dim=-1)
    assert cos.min().item() >= 0.999


def test_graph_replay_equals_eager(bge_m3_dir: Path) -> None:
    fast, _, tokenizer = _backends(bge_m3_dir, "bf16")
    assert fast.graphs is not None
    batches = [
        PackedBatch.from_encoded(tokenizer.encode(MULTILINGUAL[:1], 128)),
        PackedBatch.from_encoded(tokenizer.encode(MULTILINGUAL[1:9], 128)),
    ]
    # a bucket is captured the second time it is asked for (graphs.CAPTURE_AFTER): the first two
    # run eagerly, the next two capture, the last replays the first graph after another one ran
    for k, batch in enumerate([*batches, *batches, batches[0]]):
        graphed = _states(fast, batch, use_graphs=True).hidden.float().clone()
        assert len(fast.graphs.captured) == max(0, min(2, k - 1)), k
        eager = _states(fast, batch, use_graphs=False).hidden
        torch.testing.assert_close(graphed, eager.float(), atol=3e-2, rtol=3e-2)
        cos = torch.nn.functional.cosine_similarity(graphed, eager.float(), dim=-1)
        assert cos.min().item() >= 0.9999
    assert len(fast.graphs.captured) == 2
    again = _states(fast, batches[1], use_graphs=True).hidden.clone()  # a view of the static output
    first = _states(fast, batches[1], use_graphs=True).hidden
    assert torch.equal(again, first)  # replays are deterministic


def test_padded_eager_rows_change_no_real_row(long_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch too large for the captured graphs runs with its rows rounded up to
    staging.EAGER_ROW_STEP (rows of no sequence); its states equal those of the same batch unpadded."""
    from m3engine.backends.fast import staging

    fast, _, _ = _backends(long_dir, "bf16")
    rng = np.random.default_rng(5)
    batch = PackedBatch.from_encoded([_random_text(rng, n) for n in (300,) * 15 + (77,)])
    t = batch.num_tokens
    assert t > 4096 and t % staging.EAGER_ROW_STEP
    rows_run: list[int] = []
    encode = fast._encode
    monkeypatch.setattr(
        fast, "_encode", lambda inputs, *a: rows_run.append(len(inputs.input_ids)) or encode(inputs, *a)
    )
    padded = [_real_rows(_states(fast, batch, True, cls_only)).clone() for cls_only in (False, True)]
    assert rows_run == [staging.eager_rows(t)] * 2
    monkeypatch.setattr(staging, "EAGER_ROW_STEP", 1)
    plain = [_real_rows(_states(fast, batch, True, cls_only)) for cls_only in (False, True)]
    assert rows_run[2:] == [t, t]
    for a, b in zip(padded, plain, strict=True):
        assert a.shape == b.shape and a.shape[0] in (t, batch.num_seqs)
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item() >= 0.9999


def _real_rows(states: DeviceStates) -> torch.Tensor:
    """(T, H) every row's final states, or (N, H) the CLS rows' of a CLS-only batch, in fp32."""
    return (states.cls_states() if states.cls_only else states.hidden).float()


def test_padded_cls_rows_change_no_logit(reranker_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reranker batches, graph-replayed and eager, score the same with the products over CLS rows
    run on staging.cls_rows(N) rows as on N rows."""
    from m3engine.backends.fast import backend as backend_module
    from m3engine.backends.fast import staging

    fast, _, _ = _backends(reranker_dir, "fp16")
    assert fast.graphs is not None
    rng = np.random.default_rng(7)
    small = [_random_text(rng, int(n)) for n in rng.integers(20, 129, 21)]  # under 4,096 tokens: a graph
    large = [_random_text(rng, int(n)) for n in rng.integers(100, 129, 45)]  # over: eager
    batches = [PackedBatch.from_encoded(texts) for texts in (small, large)]
    assert batches[0].num_tokens <= 4096 < batches[1].num_tokens
    heads = HeadRequest(logits=True)
    for batch in batches:  # a bucket is captured the second time it is asked for: `small` then replays
        fast.forward(batch, heads)
        fast.forward(batch, heads)
    assert fast.graphs.captured
    rows_seen: list[int] = []
    classify = backend_module.classify
    monkeypatch.setattr(
        backend_module, "classify", lambda w, cls: rows_seen.append(len(cls)) or classify(w, cls)
    )
    padded = [fast.forward(b, heads).logits for b in batches]
    assert rows_seen == [staging.cls_rows(21), staging.cls_rows(45)] == [32, 48]
    monkeypatch.setattr(fast, "_cls_rows", lambda n: n)
    plain = [fast.forward(b, heads).logits for b in batches]
    assert rows_seen[2:] == [21, 45]
    for a, b in zip(padded, plain, strict=True):
        assert a is not None and b is not None and a.shape == b.shape and a.shape[0] in (21, 45)
        np.testing.assert_allclose(a, b, atol=2e-3, rtol=2e-3)


def _random_text(rng: np.random.Generator, length: int) -> Encoded:
    body = rng.integers(5, 300, size=max(0, length - 2)).tolist()
    return Encoded(ids=[0, *body, 2][:length] if length > 1 else [0])


def test_8192_token_input(long_dir: Path) -> None:
    fast, ref, _ = _backends(long_dir, "bf16")
    batch = PackedBatch.from_encoded([_random_text(np.random.default_rng(0), 8192)])
    # one text: a single swap in its top 10 is 0.9; the 0.95 gate is over many texts (above)
    _check_gate(fast.forward(batch, ALL), ref.forward(batch, ALL), min_overlap=0.8)


def test_mixed_one_token_and_8192_tokens(long_dir: Path) -> None:
    fast, ref, _ = _backends(long_dir, "bf16")
    rng = np.random.default_rng(1)
    items = [_random_text(rng, 1), _random_text(rng, 8192), _random_text(rng, 5), _random_text(rng, 1)]
    batch = PackedBatch.from_encoded(items)
    together = fast.forward(batch, ALL)
    _check_gate(together, ref.forward(batch, ALL), min_overlap=0.8)
    for i, item in enumerate(items):
        alone = fast.forward(PackedBatch.from_encoded([item]), ALL)
        assert alone.dense is not None and together.dense is not None
        assert _cosines(alone.dense, together.dense[i : i + 1])[0] >= 0.9999
        assert together.colbert is not None and alone.colbert is not None
        assert together.colbert[i].shape == alone.colbert[0].shape == (len(item) - 1, 64)


def test_no_triton_compile_after_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of any size after the warm-up compile no Triton kernel: it ran one batch per kernel
    variant (small_gemm's configs by token count), and per-batch sizes and alignments are not
    specialised on. BGE-M3's layer shapes (what small_gemm's table holds), two layers. The kernels'
    in-process caches are emptied first, so what earlier tests compiled does not hide a missing
    warm-up (a kernel then comes from Triton's disk cache, which also counts as a compile here)."""
    from triton.runtime.jit import JITFunction

    from m3engine.backends.fast import kernels, small_gemm, staging, varlen_attention
    from m3engine.bench.synthetic import Architecture, build_synthetic

    path = build_synthetic("bge-m3", tmp_path / "m3", arch=Architecture(layers=2, vocab=1000, positions=1026))
    for module in (kernels, small_gemm, varlen_attention):
        for fn in vars(module).values():
            if isinstance(fn, JITFunction):
                fn.device_caches.clear()
    compiled: list[str] = []
    original = JITFunction._do_compile

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(self.__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JITFunction, "_do_compile", counting)
    backend = _backends(path, "bf16")[0]
    dense = HeadRequest(dense=True)  # CLS-only: the warm-up's passes over CLS rows run too
    backend.warmup(BatchLimits(max_tokens=16384, max_seqs=256, max_length=1024, heads=(ALL, dense)))
    assert compiled.count("_gemm_kernel") >= 4, compiled  # the warm-up compiled small_gemm's configs
    compiled.clear()
    monkeypatch.setattr(staging, "EAGER_ROW_STEP", 1)  # the eager batches below run at their own sizes
    sizes = ([1], [2], [3], [16], [17], [41], [5, 36], [63, 1], [64], [65], [100, 29], [255], [256], [257])
    for lengths in (*sizes, [300, 1], [1000, 17, 3], [511, 2], [3] * 40, [2] * 200):
        batch = PackedBatch.from_encoded([Encoded(ids=[5] * n) for n in lengths])
        for cls_only in (False, True):  # CLS-only batches run their last products on staging.cls_rows
            _states(backend, batch, False, cls_only)
    torch.cuda.synchronize()
    assert compiled == []

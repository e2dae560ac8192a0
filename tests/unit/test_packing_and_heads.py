from __future__ import annotations

import numpy as np
import pytest
import torch

from m3engine.models.head_outputs import sparse_weights
from m3engine.models.heads import M3Heads, mean_pool
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch, SparseVector
from tests.heads import run_heads


def test_pack_pad_round_trip() -> None:
    items = [
        Encoded([0, 5, 6, 2]),
        Encoded([0, 2]),
        Encoded([0, 7, 8, 9, 10, 2], type_ids=[0, 0, 0, 1, 1, 1]),
    ]
    batch = PackedBatch.from_encoded(items)
    assert batch.cu_seqlens.tolist() == [0, 4, 6, 12]
    assert (batch.num_seqs, batch.num_tokens, batch.max_len) == (3, 12, 6)
    ids, mask, types = batch.padded(pad_id=1)
    assert ids.tolist()[1] == [0, 2, 1, 1, 1, 1]
    assert mask.sum(1).tolist() == [4, 2, 6]
    assert ids[mask.astype(bool)].tolist() == batch.input_ids.tolist()  # unpad(pad(x)) == x
    assert types is not None and types[2].tolist() == [0, 0, 0, 1, 1, 1] and types[0].tolist() == [0] * 6


def test_sparse_keeps_the_max_per_id_and_drops_specials_and_non_positive() -> None:
    # text 0: <s> 7 9 7 </s> ; text 1: <s> 7 3(unk) 8 </s>
    ids = np.array([0, 7, 9, 7, 2, 0, 7, 3, 8, 2])
    weights = np.array([5.0, 0.2, 0.0, 0.6, 4.0, 5.0, 0.1, 9.0, 0.3, 4.0], dtype=np.float32)
    first, second = sparse_weights(weights, ids, (5, 5), np.array([0, 1, 2, 3]), vocab_size=16)
    assert first.indices.tolist() == [7] and second.indices.tolist() == [7, 8]
    np.testing.assert_allclose(first.values, [0.6])
    np.testing.assert_allclose(second.values, [0.1, 0.3])
    assert first.values.dtype == np.float32


def test_sparse_of_a_text_with_no_kept_token_is_empty() -> None:
    ids = np.array([0, 2, 0, 9, 2])
    weights = np.array([1.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)  # text 1's only content weight is 0
    out = sparse_weights(weights, ids, (2, 3), np.array([0, 2]), vocab_size=16)
    assert [len(v.indices) for v in out] == [0, 0]


def test_colbert_skips_each_cls_and_keeps_eos() -> None:
    torch.manual_seed(0)
    heads = M3Heads(hidden_size=4, colbert_dim=3)
    hidden = torch.randn(5, 4)  # texts of 3 and 2 tokens
    with torch.inference_mode():  # as the backends call it
        out = run_heads(
            hidden,
            np.array([0, 7, 2, 0, 2]),
            torch.tensor([0, 3, 5]),
            (3, 2),
            HeadRequest(colbert=True),
            "cls",
            heads,
            np.array([0, 1, 2, 3]),
            vocab_size=16,
        ).result()
    assert out.colbert is not None and [v.shape for v in out.colbert] == [(2, 3), (1, 3)]
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(heads.colbert_linear(hidden[[1, 2, 4]]), dim=-1)
    np.testing.assert_allclose(np.concatenate(out.colbert), expected.numpy(), atol=1e-6)


def _all_heads(hidden: torch.Tensor, heads: M3Heads) -> BatchOutputs:
    """Every head over two texts of 3 and 2 tokens, as a backend calls them."""
    with torch.inference_mode():
        return run_heads(
            hidden,
            np.array([0, 7, 2, 0, 2]),
            torch.tensor([0, 3, 5]),
            (3, 2),
            HeadRequest(dense=True, sparse=True, colbert=True),
            "cls",
            heads,
            np.array([0, 1, 2, 3]),
            vocab_size=16,
        ).result()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_states_give_float16_colbert_and_float32_dense_and_sparse(dtype: torch.dtype) -> None:
    """FlagEmbedding with use_fp16 returns float16 ColBERT rows; dense and sparse stay float32."""
    torch.manual_seed(0)
    heads = M3Heads(hidden_size=64, colbert_dim=48)
    hidden = torch.randn(5, 64)
    full, half = _all_heads(hidden, heads), _all_heads(hidden.to(dtype), heads)
    assert full.colbert is not None and half.colbert is not None
    assert [c.dtype for c in full.colbert] == [np.float32] * 2
    assert [c.dtype for c in half.colbert] == [np.float16] * 2
    assert [c.shape for c in half.colbert] == [(2, 48), (1, 48)]
    assert half.dense is not None and half.dense.dtype == np.float32
    assert half.sparse is not None and all(v.values.dtype == np.float32 for v in half.sparse)
    ours, truth = np.concatenate(half.colbert).astype(np.float32), np.concatenate(full.colbert)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=2e-3)  # normalised in fp32
    cosines = (ours * truth).sum(1) / np.linalg.norm(ours, axis=1)
    assert cosines.min() > 0.999, cosines  # the states' rounding (bf16: 8 bits) dominates
    # the fp32 module is left as it was: a later fp32 batch is fp32 again
    assert heads.colbert_linear.weight.dtype == torch.float32
    again = _all_heads(hidden, heads).colbert
    assert again is not None and again[0].dtype == np.float32


def test_mean_pool_per_sequence() -> None:
    hidden = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    pooled = mean_pool(hidden, torch.tensor([0, 2, 5]))
    assert pooled.tolist() == [[1.0, 2.0], [6.0, 7.0]]


def test_sparse_vector_forms() -> None:
    vec = SparseVector(np.array([3, 10, 42]), np.array([0.5, 0.25, 0.75], dtype=np.float32))
    assert vec.to_dict() == {"3": 0.5, "10": 0.25, "42": 0.75}
    top = vec.top_k(2)
    assert top.indices.tolist() == [3, 42] and top.values.tolist() == [0.5, 0.75]


def test_concat_takes_sequences_of_several_batches_in_the_order_given() -> None:
    from m3engine.server.multiproc.wire import batch_from_wire, batch_to_wire

    a = PackedBatch.from_encoded([Encoded(ids=[0, 5, 2]), Encoded(ids=[0, 6, 7, 2])])
    b = PackedBatch.from_encoded([Encoded(ids=[0, 9, 2], type_ids=[0, 0, 1])])
    c = PackedBatch.concat([(a, 1), (b, 0), (a, 0)])
    assert c.input_ids.tolist() == [0, 6, 7, 2, 0, 9, 2, 0, 5, 2]
    assert c.cu_seqlens.tolist() == [0, 4, 7, 10]
    assert c.token_type_ids is not None and c.token_type_ids.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    back = batch_from_wire(batch_to_wire(c))  # as a job crosses from a frontend to the engine process
    for name in ("input_ids", "cu_seqlens", "token_type_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(c, name))

"""/tokenize and /decode helpers: token details in TEI's shape, ids checked against the vocabulary."""

from __future__ import annotations

from tokenizers import Encoding

from m3engine.errors import InputError
from m3engine.tokenization.tokenizer import TextTokenizer


def tokenize_detail(enc: Encoding) -> list[dict[str, object]]:
    """One encoding's tokens in TEI's shape."""
    out: list[dict[str, object]] = []
    for token_id, token, special, (start, stop) in zip(
        enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets, strict=True
    ):
        out.append(
            {
                "id": token_id,
                "text": token,
                "special": bool(special),
                "start": None if special else start,
                "stop": None if special else stop,
            }
        )
    return out


def decode_ids(tokenizer: TextTokenizer, ids: list[int], skip_special_tokens: bool) -> str:
    bad = next((i for i, t in enumerate(ids) if not 0 <= t < tokenizer.vocab_size), None)
    if bad is not None:
        raise InputError(f"id {bad} is outside the vocabulary [0, {tokenizer.vocab_size})")
    return tokenizer.decode(ids, skip_special_tokens)

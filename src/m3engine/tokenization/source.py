"""Where a model's tokenizer comes from: its checkpoint's files through transformers, or the frozen
copy that `m3engine build` writes into an ONNX artifact.

TextTokenizer (tokenizer.py) needs two things: the Rust tokenizer of the `tokenizers` library
(normalizer, pre-tokenizer, model, post-processor) and the ids of the special tokens. transformers'
AutoTokenizer finds both in any checkpoint (tokenizer.json, or a sentencepiece model it converts;
the special tokens of tokenizer_config.json and special_tokens_map.json), but importing it imports
torch where torch is installed, and it is a dependency of its own where not. So `m3engine build`
writes what AutoTokenizer gave into the artifact as one file, FROZEN, which `tokenizers` reads
alone: an install without transformers and torch (`m3engine[onnx]`) tokenizes exactly as the
build machine did, and a load with them installed does not import them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers

from m3engine.errors import ModelError

FROZEN = "m3engine-tokenizer.json"
FORMAT = "m3engine-tokenizer/1"


@dataclass(frozen=True)
class TokenizerParts:
    rust: tokenizers.Tokenizer  # TextTokenizer's own: it reconfigures it
    pad_id: int
    special_ids: frozenset[int]  # the ids the sparse head drops


def parts_of(hf_tokenizer: Any) -> TokenizerParts:
    """The parts of a transformers (fast) tokenizer."""
    pad = hf_tokenizer.pad_token_id
    # Exactly FlagEmbedding's unused_tokens (cls, eos, pad, unk). Not sep: for XLM-R it is eos
    # anyway, and the reference keeps BERT's [SEP].
    ids = (hf_tokenizer.cls_token_id, hf_tokenizer.eos_token_id, pad, hf_tokenizer.unk_token_id)
    return TokenizerParts(
        # a copy: TextTokenizer turns truncation and padding off on it, which hf_tokenizer relies on
        rust=tokenizers.Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str()),
        pad_id=int(pad if pad is not None else 0),
        special_ids=frozenset(int(i) for i in ids if i is not None),
    )


def read_parts(path: Path) -> TokenizerParts:
    """The tokenizer of the model directory `path`: its FROZEN file if it has one, else transformers'."""
    frozen = path / FROZEN
    if frozen.is_file():
        return _read_frozen(frozen)
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        raise ModelError(
            f"{path} has no {FROZEN}, and reading its tokenizer files needs transformers, which is not "
            "installed: `pip install 'm3engine[torch]'`, or serve an ONNX artifact of `m3engine build` "
            "(it carries that file) with --backend onnx"
        ) from error
    return parts_of(AutoTokenizer.from_pretrained(str(path), use_fast=True))


def write_parts(parts: TokenizerParts, directory: Path) -> Path:
    """Write `parts` as directory/FROZEN; its path."""
    data = {
        "format": FORMAT,
        "pad_id": parts.pad_id,
        "special_ids": sorted(parts.special_ids),
        # as a string: loads as one value, and goes to Tokenizer.from_str as it is (no re-encoding)
        "tokenizer": parts.rust.to_str(),
    }
    target = directory / FROZEN
    target.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def _read_frozen(path: Path) -> TokenizerParts:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r} is not {FORMAT!r}")
        return TokenizerParts(
            rust=tokenizers.Tokenizer.from_str(data["tokenizer"]),
            pad_id=int(data["pad_id"]),
            special_ids=frozenset(int(i) for i in data["special_ids"]),
        )
    except Exception as error:  # tokenizers raises a plain Exception for a malformed tokenizer
        raise ModelError(
            f"{path} cannot be read ({type(error).__name__}: {str(error)[:200]}); rebuild the artifact "
            "with `m3engine build`"
        ) from None

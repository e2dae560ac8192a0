"""A small BGE-M3-layout checkpoint whose position table reaches 8,192 tokens (for the GPU tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def build_long_bge_m3(source: Path, directory: Path, hidden: int = 64, seed: int = 3) -> Path:
    """Copy `source`'s tokenizer and heads layout; encoder of `hidden` width with 8,194 positions."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix in (".json", ".txt", ".model") and item.name != "config.json":
            shutil.copy(item, directory / item.name)
    shutil.copytree(source / "1_Pooling", directory / "1_Pooling", dirs_exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        f'{{"word_embedding_dimension": {hidden}, "pooling_mode_cls_token": true}}'
    )
    config = XLMRobertaConfig(
        vocab_size=_vocab_size(source),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=4 * hidden,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(str(directory), safe_serialization=True)
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), directory / "colbert_linear.pt")
    torch.save(torch.nn.Linear(hidden, 1).state_dict(), directory / "sparse_linear.pt")
    return directory


def _vocab_size(source: Path) -> int:
    import json

    return int(json.loads((source / "config.json").read_text())["vocab_size"])

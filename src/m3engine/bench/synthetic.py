"""Checkpoints with the exact architecture and file layout of BAAI/bge-m3 and bge-reranker-v2-m3,
random weights: benchmarks need the shapes, not the training.

The tensors are written directly (no transformers model is instantiated, which would spend most of
a minute initialising 568 M parameters), in fp16, under the key names transformers reads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in XLM-R


@dataclass(frozen=True)
class Architecture:
    layers: int = 24
    hidden: int = 1024
    heads: int = 16
    ffn: int = 4096
    vocab: int = 250002
    positions: int = 8194


MODELS = ("bge-m3", "bge-reranker-v2-m3")


def _config(arch: Architecture, reranker: bool) -> dict[str, object]:
    config: dict[str, object] = {
        "architectures": ["XLMRobertaForSequenceClassification" if reranker else "XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "hidden_size": arch.hidden,
        "num_hidden_layers": arch.layers,
        "num_attention_heads": arch.heads,
        "intermediate_size": arch.ffn,
        "vocab_size": arch.vocab,
        "max_position_embeddings": arch.positions,
        "type_vocab_size": 1,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    }
    if reranker:
        config.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    return config


def _state(arch: Architecture, reranker: bool, generator: torch.Generator) -> dict[str, torch.Tensor]:
    import torch

    def normal(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * 0.02).half()

    def zeros(n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.float16)

    def ones(n: int) -> torch.Tensor:
        return torch.ones(n, dtype=torch.float16)

    h, f = arch.hidden, arch.ffn
    prefix = "roberta." if reranker else ""
    state = {
        "embeddings.word_embeddings.weight": normal(arch.vocab, h),
        "embeddings.position_embeddings.weight": normal(arch.positions, h),
        "embeddings.token_type_embeddings.weight": normal(1, h),
        "embeddings.LayerNorm.weight": ones(h),
        "embeddings.LayerNorm.bias": zeros(h),
    }
    for i in range(arch.layers):
        p = f"encoder.layer.{i}."
        linears = {f"attention.self.{n}": (h, h) for n in ("query", "key", "value")}
        linears |= {"attention.output.dense": (h, h), "intermediate.dense": (f, h), "output.dense": (h, f)}
        for name, (rows, cols) in linears.items():  # weight (out, in), bias (out,)
            state[f"{p}{name}.weight"], state[f"{p}{name}.bias"] = normal(rows, cols), normal(rows)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[f"{p}{norm}.weight"], state[f"{p}{norm}.bias"] = ones(h), zeros(h)
    state = {prefix + k: v for k, v in state.items()}
    if not reranker:  # bge-m3 ships XLMRobertaModel's pooler, unused by its heads
        state["pooler.dense.weight"] = normal(h, h)
        state["pooler.dense.bias"] = zeros(h)
    if reranker:
        state["classifier.dense.weight"] = normal(h, h)
        state["classifier.dense.bias"] = zeros(h)
        state["classifier.out_proj.weight"] = (torch.randn(1, h, generator=generator) * 0.5).half()
        state["classifier.out_proj.bias"] = zeros(1)
    return state


def copy_tokenizer(source: Path, directory: Path) -> None:
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "sentencepiece.bpe.model",
    ):
        if (source / name).is_file():
            shutil.copy(source / name, directory / name)


def make_tokenizer(directory: Path, vocab: int) -> None:
    """A word-level tokenizer over `vocab` made-up words (w4, w5, ...), XLM-R's special ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = {s: i for i, s in enumerate(SPECIALS)}
    words.update({f"w{i}": i for i in range(len(SPECIALS), vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(directory / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>"}
    specials.update(cls_token="<s>", pad_token="<pad>")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192, **specials}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))


def build_synthetic(
    model: str,
    directory: Path,
    tokenizer: Path | None = None,
    arch: Architecture | None = None,
    seed: int = 0,
) -> Path:
    """Write `model` (one of MODELS) into `directory`; returns it."""
    # here, not at the top: the CLI imports this module for its choices, and torch-free installs too
    import torch
    from safetensors.torch import save_file

    if model not in MODELS:
        raise ValueError(f"unknown synthetic model {model!r}; choose one of: {', '.join(MODELS)}")
    arch = arch or Architecture()
    reranker = model == "bge-reranker-v2-m3"
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    (directory / "config.json").write_text(json.dumps(_config(arch, reranker), indent=1))
    save_file(
        _state(arch, reranker, generator), str(directory / "model.safetensors"), metadata={"format": "pt"}
    )
    if not reranker:
        colbert = {"weight": torch.randn(arch.hidden, arch.hidden, generator=generator) * 0.02}
        colbert["bias"] = torch.zeros(arch.hidden)
        torch.save(colbert, directory / "colbert_linear.pt")
        sparse = {"weight": torch.randn(1, arch.hidden, generator=generator) * 0.05, "bias": torch.zeros(1)}
        torch.save(sparse, directory / "sparse_linear.pt")
    if tokenizer is not None:
        copy_tokenizer(tokenizer, directory)
    else:
        make_tokenizer(directory, arch.vocab)
    return directory

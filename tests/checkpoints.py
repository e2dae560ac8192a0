"""Tiny random checkpoints with the exact file layouts of BAAI/bge-m3 and BAAI/bge-reranker-v2-m3.

The weights are random and small; the files, their names and the loading code are the real ones:
config.json + model.safetensors + tokenizer files (+ colbert_linear.pt, sparse_linear.pt for BGE-M3).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tests.texts import CORPUS

MAX_POSITIONS = 130  # XLM-R numbers positions from 2: a limit of 128 tokens
HIDDEN = 32
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in XLM-R


def build_xlmr_tokenizer(directory: Path) -> int:
    """A Unigram tokenizer laid out like XLM-R's (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=700, special_tokens=SPECIALS, unk_token="<unk>")
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    from transformers import XLMRobertaTokenizerFast

    wrapped = XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=MAX_POSITIONS - 2,
    )
    wrapped.save_pretrained(str(directory))
    return int(tok.get_vocab_size())


def _xlmr_config(vocab_size: int, **extra: object) -> object:
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=0.4,  # larger than a real init, so that different texts differ clearly
        **extra,
    )


def build_bge_m3(directory: Path, seed: int = 0, colbert_dim: int = HIDDEN) -> Path:
    from transformers import XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_xlmr_tokenizer(directory)
    torch.manual_seed(seed)
    model = XLMRobertaModel(_xlmr_config(vocab), add_pooling_layer=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    torch.save(torch.nn.Linear(HIDDEN, colbert_dim).state_dict(), directory / "colbert_linear.pt")
    sparse = torch.nn.Linear(HIDDEN, 1)
    torch.nn.init.normal_(sparse.weight, std=0.05)  # weights of ~0.3, BGE-M3's own scale
    torch.save(sparse.state_dict(), directory / "sparse_linear.pt")
    (directory / "1_Pooling").mkdir(exist_ok=True)  # bge-m3 ships the sentence-transformers files too
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True})
    )
    return directory


def build_reranker(directory: Path, seed: int = 1) -> Path:
    from transformers import XLMRobertaForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_xlmr_tokenizer(directory)
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(_xlmr_config(vocab, num_labels=1))
    torch.nn.init.normal_(model.classifier.out_proj.weight, std=0.3)  # logits of about +-1: no ties
    torch.nn.init.zeros_(model.classifier.out_proj.bias)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def build_bert_classifier(directory: Path, tokenizer_source: Path, seed: int = 2) -> Path:
    """A 3-label BERT sentiment-style classifier with a real BERT WordPiece tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_source / name).is_file():
            shutil.copy(tokenizer_source / name, directory / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(str(directory), safe_serialization=True)
    return directory


if __name__ == "__main__":  # python -m tests.checkpoints DIR: build the tiny models for demos
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")
    print(build_bge_m3(out / "bge-m3"), build_reranker(out / "bge-reranker-v2-m3"), sep="\n")
